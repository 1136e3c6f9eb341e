"""Training configuration: typed dataclasses read from a YAML recipe, with `--key value` overrides.

A recipe has one section per dataclass (`model`, `lora`, `data`, `loss`, `resolution`, `run`) plus `training`,
which is `transformers.TrainingArguments`. On the command line, `--section.key value` sets any key, and a bare
`--key value` works when the key belongs to exactly one section (so `--output_dir`, `--max_steps`,
`--learning_rate` and the data paths work as they do with plain `transformers`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import TrainingArguments

from llscore.modeling import LoraSettings, ModelConfig
from llscore.prompts import ResolutionRule


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the key and what is valid."""


@dataclass
class DataSettings:
    """Where the benchmark and the prepared dataset live; the mini bench is generated when missing."""

    bench_dir: str = "data/llbench_mini"
    prepared_dir: str = "data/llbench_mini_prepared"
    data_config: str | None = None
    generate_mini_bench: bool = False
    mini_bench_sources: int = 80
    mini_bench_seed: int = 0
    paraphrase_questions: bool = True
    augment_scale: float = 1.0
    max_val_images: int | None = None


@dataclass
class LossWeights:
    """Weights of the four loss terms (docs/training.md); a zero weight skips the term's forward pass."""

    quality_kl: float = 1.0
    pair_fidelity: float = 1.0
    hallucination_bce: float = 1.0
    level_ce: float = 0.0


@dataclass
class RunSettings:
    """LL-Score-specific run options that are not `TrainingArguments`.

    `build_tiny_base` names a Qwen-VL family whose tiny base is built at `model.model_name_or_path` when it is
    missing, with the weights in `tiny_base_weights` when given (the shipped low-level-pretrained tiny base,
    docs/training.md) or a random initialisation.

    With `training.push_to_hub` and `training.hub_model_id`, the final checkpoint is pushed once at the end by
    `llscore.hub.push_checkpoint` (merged when `push_merged`; an adapter names `push_base_repo_id` as its base).

    A non-empty `training.output_dir` holds an earlier run: training into it needs `resume_from_checkpoint`
    (a checkpoint-N folder, or `true` for the latest one) or `overwrite_output_dir`.
    """

    build_tiny_base: str | None = None
    overwrite_output_dir: bool = False
    tiny_base_weights: str | None = None
    vision_lr_scale: float = 1.0
    validate_before_training: bool = True
    push_merged: bool = False
    push_base_repo_id: str | None = None


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    resolution: ResolutionRule = field(default_factory=ResolutionRule)
    run: RunSettings = field(default_factory=RunSettings)
    training: TrainingArguments = field(
        default_factory=lambda: TrainingArguments(output_dir="checkpoints/run")
    )


SECTION_CLASSES = {
    "model": ModelConfig,
    "lora": LoraSettings,
    "data": DataSettings,
    "loss": LossWeights,
    "resolution": ResolutionRule,
    "run": RunSettings,
    "training": TrainingArguments,
}


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _type_hints(cls) -> dict:
    if cls is TrainingArguments:
        return {name: f.type for name, f in _fields(cls).items()}
    return typing.get_type_hints(cls)


def _coerce(value, annotation, key: str):
    """Check (and, for command-line strings, convert) a value against a dataclass field annotation."""
    options = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else ()
    )
    options = options or (annotation,)
    if value is None or value == "null":
        if type(None) in options:
            return None
        raise ConfigError(f"{key}: null is not allowed here; expected {annotation}")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option)
        except (TypeError, ValueError) as err:
            errors.append(str(err))
    raise ConfigError(f"{key}: bad value {value!r}; expected {annotation} ({'; '.join(errors)})")


def _convert(value, option):
    origin = typing.get_origin(option) or option
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError("not a boolean")
    if origin in (int, float):
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        number = origin(value)
        if origin is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("not an integer")
        return number
    if origin is str or (isinstance(origin, type) and issubclass(origin, enum.Enum)):
        if isinstance(value, dict | list):
            raise ValueError("not a string")
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list | tuple):
            raise ValueError("not a list")
        return list(value)
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ValueError("not a mapping")
        return value
    raise TypeError(f"unsupported type {option}")


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--key value` / `--key=value` pairs, in order."""
    overrides, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; overrides are written --key value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, value = arg[2:], argv[i + 1]
            i += 2
        else:
            key, value = arg[2:], "true"
            i += 1
        overrides[key] = value
    return overrides


def _resolve_key(key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section in SECTION_CLASSES and name in _fields(SECTION_CLASSES[section]):
            return section, name
    else:
        owners = [s for s, cls in SECTION_CLASSES.items() if key in _fields(cls)]
        if len(owners) == 1:
            return owners[0], key
        if len(owners) > 1:
            raise ConfigError(
                f"--{key} is ambiguous; write one of {', '.join(f'--{s}.{key}' for s in owners)}"
            )
    every = [f"{s}.{name}" for s, cls in SECTION_CLASSES.items() for name in _fields(cls)]
    close = difflib.get_close_matches(key, every + [k.split(".", 1)[1] for k in every], n=3, cutoff=0.75)
    hint = f"did you mean {' or '.join(f'--{c}' for c in dict.fromkeys(close))}? " if close else ""
    sections = ", ".join(s for s in SECTION_CLASSES if s != "training")
    raise ConfigError(
        f"unknown config key {key!r}; {hint}keys are the fields of the sections {sections} (llscore/config.py) "
        "as --section.key, and every transformers.TrainingArguments field as a bare --key"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a recipe, apply command-line overrides, and build typed sections (clear errors on bad keys/types)."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections {sorted(SECTION_CLASSES)}")
    sections: dict[str, dict] = {name: {} for name in SECTION_CLASSES}
    for section, values in raw.items():
        if section not in SECTION_CLASSES:
            raise ConfigError(
                f"{path}: unknown section {section!r}; valid sections: {sorted(SECTION_CLASSES)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
        for name, value in values.items():
            sections[section][name] = value
            _resolve_key(f"{section}.{name}")
    for key, value in parse_overrides(overrides or []).items():
        section, name = _resolve_key(key)
        sections[section][name] = value
    built = {}
    for section, cls in SECTION_CLASSES.items():
        hints = _type_hints(cls)
        kwargs = {
            name: _coerce(value, hints[name], f"{section}.{name}")
            for name, value in sections[section].items()
        }
        if section == "training":
            kwargs.setdefault("output_dir", "checkpoints/run")
            kwargs.setdefault("remove_unused_columns", False)
        try:
            built[section] = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"section {section!r}: {err}") from err
    if built["training"].hub_token:
        raise ConfigError(
            "hub_token: a token given on the command line or in a recipe would be saved in training_args.bin of "
            "the run and of every checkpoint; set HF_TOKEN or run `hf auth login` instead"
        )
    return TrainConfig(**built)
