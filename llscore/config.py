"""Training configuration: flat YAML recipes parsed by `transformers.HfArgumentParser` (docs/training.md).

A recipe is one flat mapping, as open-r1's are: every key is a field of one of the recipe's dataclasses
(`ModelConfig`, `LoraSettings`, `DataSettings`, `ResolutionRule`, `LLScoreTrainingArguments`), or of a section a
caller adds (`load_config(..., sections=...)`: the simulators' settings are llscore_sim's, docs/architecture.md).
Any key can be overridden on the command line as `--key value`; the parser converts and checks every value,
recipe or command line, and names the keys it does not know.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from llscore.errors import ConfigError, one_line
from llscore.formulations import REGISTRY
from llscore.modeling import LoraSettings, ModelConfig
from llscore.prompts import ResolutionRule

logger = logging.getLogger(__name__)


@dataclass
class DataSettings:
    """Where a run's data lives (docs/architecture.md): the bench, the dataset prepared from it (made when
    missing), the data config it is read with, and how much of the validation split in-training validation
    scores. What makes simulated inputs (LL-Bench-mini, the tiny base) is llscore_sim's own section."""

    bench_dir: str = "data/llbench_mini"
    prepared_dir: str = "data/llbench_mini_prepared"
    data_config: str | None = None
    max_val_images: int | None = None


LOSS_TERMS = tuple(dict.fromkeys(term for f in REGISTRY.values() for term in f.loss_terms))
"""Every weighted term; each formulation reads its own (`Formulation.loss_terms`, docs/training.md)."""
RATES = ("learning_rate", "vision_lr_scale", "projector_learning_rate", *LOSS_TERMS)
"""Settings that must be finite and >= 0: torch checks no per-group rate, and a negative one is gradient ascent."""
COUNTS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")


def _loss_weight(default: float, term: str) -> float:
    return field(default=default, metadata={"help": f"weight of the {term} (docs/training.md)"})


def _run_setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class LLScoreTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus LL-Score's loss weights and run settings, as TRL's `RewardConfig` adds its own.

    The trainer reads every setting from `self.args`. A zero `hallucination_bce` skips the hallucination
    question's forward pass and a zero `level_ce` its term; `quality_kl` and `pair_fidelity` share the quality
    forward, which always runs. With `push_to_hub` and `hub_model_id`, the final checkpoint is pushed once at
    the end by `llscore.hub.push_checkpoint` (merged when `push_merged`; an adapter names `push_base_repo_id` as
    its base). A non-empty `output_dir` holds an earlier run: training into it needs `resume_from_checkpoint`
    (a checkpoint-N folder, or `true` for the latest one) or `overwrite_output_dir`.
    """

    quality_kl: float = _loss_weight(1.0, "soft-label KL on the answer levels")
    pair_fidelity: float = _loss_weight(1.0, "Thurstone fidelity loss on each human pair")
    hallucination_bce: float = _loss_weight(1.0, "BCE of the hallucination question")
    level_ce: float = _loss_weight(0.0, "cross-entropy on the level word (a language-modelling anchor)")
    pair_ranking: float = _loss_weight(1.0, "Bradley-Terry term on the quality head's pairs (heads)")
    score_mse: float = _loss_weight(0.0, "squared error of the head's score against the human mean (heads)")
    paraphrase_questions: bool = _run_setting(True, "draw each training question from the paraphrases")
    augment_scale: float = _run_setting(
        1.0, "< 1: crop each pair to at least this fraction of its side, flip it"
    )
    vision_lr_scale: float = _run_setting(1.0, "learning-rate factor for the vision tower (full fine-tuning)")
    projector_learning_rate: float | None = _run_setting(
        None, "the projector's own learning rate; null: the vision tower's (learning_rate x vision_lr_scale)"
    )
    validate_before_training: bool = _run_setting(True, "validate the starting model before training")
    overwrite_output_dir: bool = _run_setting(False, "train over an earlier run in output_dir")
    push_merged: bool = _run_setting(False, "push LoRA weights merged into the base model")
    push_base_repo_id: str | None = _run_setting(None, "the base model's Hub id, named in a pushed adapter")

    def __post_init__(self):
        """Refuse, before `TrainingArguments` acts on them, values that would train silently wrong: a NaN or
        infinite float anywhere (it passes every `< 0` check), a negative rate or weight, a batch of nothing, and
        no output_dir (`TrainingArguments` would write to ./trainer_output)."""
        if self.output_dir is None:
            raise ValueError("output_dir cannot be null: name the folder the run writes to")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{item.name} must be a finite number, got {value}")
        negative = [name for name in RATES if (getattr(self, name) or 0) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0 (a loss weight of 0 leaves the term out)")
        for name in COUNTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        super().__post_init__()


@dataclass
class TrainConfig:
    """A parsed recipe: one object per dataclass, so each part of the code gets the settings it reads."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    resolution: ResolutionRule = field(default_factory=ResolutionRule)
    training: LLScoreTrainingArguments = field(
        default_factory=lambda: LLScoreTrainingArguments(output_dir="checkpoints/run")
    )
    sections: dict[type, Any] = field(default_factory=dict)
    """The parsed sections a caller added to the recipe (`load_config(..., sections=...)`), by class."""

    def section(self, cls: type):
        """The recipe's settings of section `cls`; its defaults when the recipe was read without it."""
        return self.sections.get(cls) or cls()


RECIPE_CLASSES = (ModelConfig, LoraSettings, DataSettings, ResolutionRule, LLScoreTrainingArguments)
"""The dataclasses of a recipe, in `TrainConfig`'s order."""


def _union(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _accepts(hint, kind: type) -> bool:
    """Whether a field annotated `hint` takes values of `kind` (None, dict, list)."""
    return any((typing.get_origin(option) or option) is kind for option in _union(hint))


def _describe(hint) -> str:
    return " or ".join(getattr(option, "__name__", str(option)) for option in _union(hint))


def _null_or(convert):
    """`--key null` sets an optional key to None, as `key: null` does in a recipe."""

    @functools.wraps(convert)
    def parse(text: str):
        return None if text == "null" else convert(text)

    return parse


class RecipeParser(HfArgumentParser):
    """`HfArgumentParser` over the recipe's dataclasses and the `sections` a caller adds. A bad value is one
    `ConfigError` line rather than argparse's usage text and exit, and an option is never matched by its prefix
    (`--max_step` is unknown).

    A section is a dataclass whose fields are more flat recipe keys; it may declare, as class variables,
    `input_files` (keys naming files that must exist), `repo_paths` (keys whose relative values in a shipped
    recipe are paths in the repo) and `builds` (key -> the path key whose folder it builds when set)."""

    def __init__(self, sections: tuple[type, ...] = ()):
        self.sections = tuple(sections)
        classes = (*RECIPE_CLASSES, *self.sections)
        super().__init__(classes, allow_abbrev=False)
        self.set_defaults(output_dir="checkpoints/run", remove_unused_columns=False)
        self.keys = {action.dest for action in self._actions} - {"help"}
        self.hints = {name: hint for cls in classes for name, hint in typing.get_type_hints(cls).items()}
        self.input_files = INPUT_FILES + _declared(self.sections, "input_files")
        self.repo_paths = REPO_PATHS + _declared(self.sections, "repo_paths")
        self.builds = {
            key: built for cls in self.sections for key, built in getattr(cls, "builds", {}).items()
        }
        for action in self._actions:
            single = action.nargs in (None, "?") and action.choices is None
            if single and callable(action.type) and _accepts(self.hints.get(action.dest), type(None)):
                action.type = _null_or(action.type)

    def error(self, message):
        raise ConfigError(message)

    def check(self, argv: list[str], origin: str) -> None:
        """Every key known and every value of its field's type, before any dataclass is built."""
        try:
            _, unknown = self.parse_known_args(argv)
        except ConfigError as err:
            raise ConfigError(f"{origin}: {err}") from err
        if unknown:
            first = unknown[0]
            if not first.startswith("-"):
                raise ConfigError(f"{origin}: unexpected value {first!r} (each value follows its --key)")
            raise ConfigError(f"{origin}: {self.unknown_key(first.split('=', 1)[0])}")

    def build(self, argv: list[str], origin: str) -> TrainConfig:
        """The recipe's dataclasses; their own checks (`__post_init__`) become one `ConfigError` line."""
        try:
            parsed = self.parse_args_into_dataclasses(argv, look_for_args_file=False)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{origin}: {one_line(err)}") from err
        main, extra = parsed[: len(RECIPE_CLASSES)], parsed[len(RECIPE_CLASSES) :]
        return TrainConfig(*main, sections={type(item): item for item in extra})

    def unknown_key(self, option: str) -> str:
        """One line for an option no dataclass has, with the closest keys."""
        key = option.removeprefix("--").replace("-", "_")
        close = difflib.get_close_matches(key, sorted(self.keys), n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(f'--{c}' for c in close)}?" if close else ""
        added = "".join(f", {cls.__module__}.{cls.__qualname__}" for cls in self.sections)
        return (
            f"unknown config key {option!r}{hint} (keys: the fields of llscore/config.py's recipe dataclasses"
            f"{added} and every transformers.TrainingArguments field)"
        )

    def recipe_arguments(self, path: Path) -> list[str]:
        """A flat recipe as command-line arguments, so the parser checks its values as it checks the command
        line's. Values argparse cannot take as text (null, mappings, empty lists) become defaults."""
        raw = read_recipe(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of keys to values")
        argv, defaults = [], {}
        shipped = path.resolve().parent == RECIPES
        built = {target for key, target in self.builds.items() if raw.get(key)}
        for key, value in raw.items():
            if key not in self.keys:
                raise ConfigError(f"{path}: {self.unknown_key(str(key))}")
            if shipped and isinstance(value, str):
                value = _in_repo(key, value, self.repo_paths, built)
            hint, action = self.hints[key], self._option_string_actions[f"--{key}"]
            kind = {type(None): "null", dict: "a mapping", list: "a list"}.get(type(value))
            if kind and not _accepts(hint, type(value)):
                raise ConfigError(f"{path}: {key} cannot be {kind} (it takes {_describe(hint)})")
            if isinstance(value, bool) and action.choices:
                raise ConfigError(
                    f"{path}: {key}: YAML reads an unquoted {value} as a boolean; quote the word"
                )
            # argparse takes no null, mapping or empty list as text, and a one-value key no list of tokens
            if kind and (not isinstance(value, list) or action.nargs is None or not value):
                defaults[key] = value
            elif isinstance(value, list):
                argv += [f"--{key}", *map(str, value)]
            else:
                argv.append(f"--{key}={value}")
        self.set_defaults(**defaults)
        return argv


REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs"
"""The shipped recipes; `--config NAME.yaml` (a name with no folder) is looked up here when not in the cwd."""
INPUT_FILES = ("data_config",)
"""The recipe's input files, checked when the recipe is read: a missing one is named by its key (a section adds
its own: `input_files`)."""
REPO_PATHS = ("bench_dir", "prepared_dir", "data_config", "output_dir", "deepspeed")
"""The keys whose relative values in a shipped recipe are paths in the repo (`_in_repo`; a section adds its own:
`repo_paths`)."""


def _declared(sections: tuple[type, ...], name: str) -> tuple[str, ...]:
    return tuple(key for cls in sections for key in getattr(cls, name, ()))


def _in_repo(key: str, value: str, repo_paths: tuple[str, ...], built: set[str]) -> str:
    """A shipped recipe's relative path, written for the repo root, as the same file from any working directory;
    `model_name_or_path` only when it is a folder of the repo (else a Hub id) or the recipe builds it there
    (`built`: the path keys a set section key builds)."""
    path = Path(value)
    if path.is_absolute() or (key not in repo_paths and key != "model_name_or_path"):
        return value
    if key == "model_name_or_path" and not (key in built or (REPO / path).exists()):
        return value
    return value if path.resolve() == (REPO / path).resolve() else str(REPO / path)


def read_recipe(path: Path):
    """The YAML in `path`; text that is not UTF-8 or not YAML is one `ConfigError` naming the file and line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the recipe as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or one_line(err)
        tab = "; indent with spaces, YAML takes no tabs" if "'\\t'" in problem else ""
        raise ConfigError(f"{where}: not valid YAML: {problem}{tab}") from None


def recipe_path(path: str | Path) -> Path:
    """The recipe file `path` names: the path itself, else a bare file name in the repo's configs/ folder."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        names = ", ".join(sorted(p.name for p in path.glob("*.yaml"))) or "none"
        raise ConfigError(f"config file {path} is a folder; name a recipe in it (recipes there: {names})")
    shipped = RECIPES / path.name
    if path.name == str(path) and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.name for p in RECIPES.glob("*.yaml"))) or "none"
    raise ConfigError(f"config file {path} does not exist; recipes in {RECIPES}: {names}")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, sections: tuple[type, ...] = ()
) -> TrainConfig:
    """Read a flat recipe, apply `--key value` overrides, and build the typed settings; a bad key or value is
    one `ConfigError` naming the recipe file or the command line. `sections`: more dataclasses whose fields are
    recipe keys (`RecipeParser`), parsed into `TrainConfig.sections`."""
    parser = RecipeParser(sections)
    recipe, overrides = [], list(overrides or [])
    if path is not None:
        path = recipe_path(path)
        recipe = parser.recipe_arguments(path)
        parser.check(recipe, str(path))
    parser.check(overrides, "command line")
    origin = "command line" if path is None else str(path)
    if path is not None and overrides:
        origin += " with the command line's overrides"
    config = parser.build(recipe + overrides, origin)
    values = {
        item.name: getattr(part, item.name)
        for part in (config.data, *config.sections.values())
        for item in dataclasses.fields(part)
    }
    for key in parser.input_files:
        value = values[key]
        if value is not None and not Path(value).expanduser().is_file():
            where = "" if Path(value).is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise ConfigError(f"{origin}: {key}: {value} is not a file{where}")
    check_objective(config)
    if config.training.hub_token:
        raise ConfigError(
            "hub_token: a token given on the command line or in a recipe would be saved in training_args.bin of "
            "the run and of every checkpoint; set HF_TOKEN or run `hf auth login` instead"
        )
    return config


def check_objective(config: TrainConfig) -> None:
    """Every loss weight of the run's formulation at 0 trains nothing (loss 0.0) and would still save the model
    as trained: refused."""
    args, formulation = config.training, config.model.formulation
    used = REGISTRY[formulation].loss_terms
    if not any(getattr(args, name) for name in used):
        raise ConfigError(
            f"every loss weight of the {formulation} formulation is 0 ({', '.join(used)}): nothing would "
            "train; set one of them above 0"
        )


def warn_unused_loss_weights(config: TrainConfig) -> None:
    """Name the loss weights set away from their defaults that the run's formulation does not read: a
    `--quality_kl 5` under heads would otherwise be ignored without a word."""
    formulation = config.model.formulation
    used = REGISTRY[formulation].loss_terms
    fields = {item.name: item.default for item in dataclasses.fields(LLScoreTrainingArguments)}
    unused = [
        name for name in LOSS_TERMS if name not in used and getattr(config.training, name) != fields[name]
    ]
    if unused:
        logger.warning(
            "%s: not read by the %s formulation (it trains with %s); the setting does nothing",
            ", ".join(unused),
            formulation,
            ", ".join(used),
        )


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
    "projector_learning_rate",
)
"""The training settings a checkpoint records (`training_settings.json`) so that a resumed run can say which
of them changed (docs/training.md)."""


def model_settings(config: TrainConfig) -> dict:
    """The loading settings that shape which parameters train (LoRA, frozen parts, quantisation); a checkpoint
    records them (`training_settings.json`, "model") since its weights and optimizer state fit that shape only.
    LoRA's own settings only when LoRA is on; its dropout shapes nothing."""
    lora = config.lora
    shape = {"use_lora": lora.use_lora}
    if lora.use_lora:
        shape |= {
            "lora_r": lora.lora_r,
            "lora_alpha": lora.lora_alpha,
            "lora_target_layers": lora.lora_target_layers,
            "lora_include_vision": lora.lora_include_vision,
        }
    model = config.model
    return shape | {
        "quantization": model.quantization,
        "freeze_vision_tower": model.freeze_vision_tower,
        "train_projector": model.train_projector,
    }


def training_settings(args: TrainingArguments) -> dict:
    """The recorded settings of `args`, as JSON values (no paths, no tokens: the file may be pushed)."""
    return {
        name: value.value if hasattr(value, "value") else value
        for name in RESUMED_SETTINGS
        if (value := getattr(args, name, None)) is not None
    }
