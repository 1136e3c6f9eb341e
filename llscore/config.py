"""Training configuration: typed dataclasses read from a YAML recipe, with `--key value` overrides.

A recipe has one section per dataclass (`model`, `lora`, `data`, `resolution`) plus `training`, `loss` and
`run`, which together are `LLScoreTrainingArguments` (`transformers.TrainingArguments` with LL-Score's own
fields). On the command line, `--section.key value` sets any key, and a bare `--key value` works when the key
belongs to exactly one section (so `--output_dir`, `--max_steps`, `--learning_rate` and the data paths work as
they do with plain `transformers`).
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

from llscore.errors import ConfigError
from llscore.modeling import LoraSettings, ModelConfig
from llscore.prompts import ResolutionRule


@dataclass
class DataSettings:
    """Where a run's inputs live, and which of them data_prep makes when they are missing (docs/architecture.md).

    `generate_mini_bench` writes LL-Bench-mini into `bench_dir`. `build_tiny_base` names a Qwen-VL family whose
    tiny base is built at `model.model_name_or_path` when it is missing, with the weights in `tiny_base_weights`
    when given (the shipped low-level-pretrained tiny base, docs/training.md) or a random initialisation.
    """

    bench_dir: str = "data/llbench_mini"
    prepared_dir: str = "data/llbench_mini_prepared"
    data_config: str | None = None
    generate_mini_bench: bool = False
    mini_bench_sources: int = 80
    mini_bench_seed: int = 0
    build_tiny_base: str | None = None
    tiny_base_weights: str | None = None
    max_val_images: int | None = None


LOSS_TERMS = ("quality_kl", "pair_fidelity", "hallucination_bce", "level_ce")


def _loss_weight(default: float, term: str) -> float:
    return field(
        default=default, metadata={"section": "loss", "help": f"weight of the {term} (docs/training.md)"}
    )


def _run_setting(default, help: str):
    return field(default=default, metadata={"section": "run", "help": help})


@dataclass
class LLScoreTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus LL-Score's loss weights and run settings, as TRL's `RewardConfig` adds its own.

    A recipe writes them in its `loss:` and `run:` sections (or `--loss.quality_kl 0.3`, `--run.vision_lr_scale
    0.1`); they land here, so the trainer reads every setting from `self.args`. A zero `hallucination_bce`
    skips the hallucination question's forward pass and a zero `level_ce` its term; `quality_kl` and
    `pair_fidelity` share the quality forward, which always runs. With `push_to_hub` and `hub_model_id`, the final checkpoint is pushed once at the end
    by `llscore.hub.push_checkpoint` (merged when `push_merged`; an adapter names `push_base_repo_id` as its
    base). A non-empty `output_dir` holds an earlier run: training into it needs `resume_from_checkpoint` (a
    checkpoint-N folder, or `true` for the latest one) or `overwrite_output_dir`.
    """

    quality_kl: float = _loss_weight(1.0, "soft-label KL on the answer levels")
    pair_fidelity: float = _loss_weight(1.0, "Thurstone fidelity loss on each human pair")
    hallucination_bce: float = _loss_weight(1.0, "BCE of the hallucination question")
    level_ce: float = _loss_weight(0.0, "cross-entropy on the level word (a language-modelling anchor)")
    paraphrase_questions: bool = _run_setting(True, "draw each training question from the paraphrases")
    augment_scale: float = _run_setting(
        1.0, "< 1: crop each pair to at least this fraction of its side, flip it"
    )
    vision_lr_scale: float = _run_setting(1.0, "learning-rate factor for the vision tower (full fine-tuning)")
    validate_before_training: bool = _run_setting(True, "validate the starting model before training")
    overwrite_output_dir: bool = _run_setting(False, "train over an earlier run in output_dir")
    push_merged: bool = _run_setting(False, "push LoRA weights merged into the base model")
    push_base_repo_id: str | None = _run_setting(None, "the base model's Hub id, named in a pushed adapter")

    def __post_init__(self):
        super().__post_init__()
        negative = [f"loss.{name}" for name in LOSS_TERMS if getattr(self, name) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0 (0 leaves the term out)")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    resolution: ResolutionRule = field(default_factory=ResolutionRule)
    training: LLScoreTrainingArguments = field(
        default_factory=lambda: LLScoreTrainingArguments(output_dir="checkpoints/run")
    )


SECTION_CLASSES = {
    "model": ModelConfig,
    "lora": LoraSettings,
    "data": DataSettings,
    "resolution": ResolutionRule,
    "training": LLScoreTrainingArguments,
}
TRAINING_SECTIONS = ("loss", "run")
"""Recipe sections whose keys are `LLScoreTrainingArguments` fields (`field.metadata["section"]`)."""
SECTIONS = (*SECTION_CLASSES, *TRAINING_SECTIONS)


def _fields(section: str) -> dict[str, dataclasses.Field]:
    """The keys of one recipe section: a dataclass's fields, or the `LLScoreTrainingArguments` fields that carry
    the section's name (`loss`, `run`; `training` has the rest)."""
    cls = SECTION_CLASSES.get(section, LLScoreTrainingArguments)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if cls is LLScoreTrainingArguments:
        wanted = None if section == "training" else section
        fields = {name: f for name, f in fields.items() if f.metadata.get("section") == wanted}
    return fields


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
        if section in SECTIONS and name in _fields(section):
            return section, name
    else:
        owners = [s for s in SECTIONS if key in _fields(s)]
        if len(owners) == 1:
            return owners[0], key
        if len(owners) > 1:
            raise ConfigError(
                f"--{key} is ambiguous; write one of {', '.join(f'--{s}.{key}' for s in owners)}"
            )
    every = [f"{s}.{name}" for s in SECTIONS for name in _fields(s)]
    close = difflib.get_close_matches(key, every + [k.split(".", 1)[1] for k in every], n=3, cutoff=0.75)
    hint = f"did you mean {' or '.join(f'--{c}' for c in dict.fromkeys(close))}? " if close else ""
    sections = ", ".join(s for s in SECTIONS if s != "training")
    raise ConfigError(
        f"unknown config key {key!r}; {hint}keys are the fields of the sections {sections} (llscore/config.py) "
        "as --section.key, and every transformers.TrainingArguments field as a bare --key"
    )


RECIPES = Path(__file__).resolve().parents[1] / "configs"
"""The shipped recipes; `--config NAME.yaml` (a name with no folder) is looked up here when not in the cwd."""


def recipe_path(path: str | Path) -> Path:
    """The recipe file `path` names: the path itself, else a bare file name in the repo's configs/ folder."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = RECIPES / path.name
    if path.name == str(path) and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.name for p in RECIPES.glob("*.yaml"))) or "none"
    raise ConfigError(f"config file {path} does not exist; recipes in {RECIPES}: {names}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a recipe, apply command-line overrides, and build typed sections (clear errors on bad keys/types)."""
    raw: dict = {}
    if path is not None:
        path = recipe_path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections {sorted(SECTIONS)}")
    sections: dict[str, dict] = {name: {} for name in SECTIONS}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {section!r}; valid sections: {sorted(SECTIONS)}")
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
        hints = typing.get_type_hints(cls)
        parts = (section, *TRAINING_SECTIONS) if cls is LLScoreTrainingArguments else (section,)
        kwargs = {
            name: _coerce(value, hints[name], f"{part}.{name}")
            for part in parts
            for name, value in sections[part].items()
        }
        if cls is LLScoreTrainingArguments:
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


TRAINING_SETTINGS = "training_settings.json"
RESUMED_SETTINGS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "seed",
    *LOSS_TERMS,
    "vision_lr_scale",
)
"""The training settings a checkpoint records (`training_settings.json`) so that a resumed run can say which
of them changed (docs/training.md)."""


def training_settings(args: TrainingArguments) -> dict:
    """The recorded settings of `args`, as JSON values (no paths, no tokens: the file may be pushed)."""
    return {
        name: value.value if hasattr(value, "value") else value
        for name in RESUMED_SETTINGS
        if (value := getattr(args, name, None)) is not None
    }
