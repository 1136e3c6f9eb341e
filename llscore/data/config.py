"""`DataConfig`: where a release keeps its five tables, what it calls their columns and values, how to split.

The canonical schema lives in `llscore.data.schema`; a release whose tables use other names is read through
the column map and value vocabularies here (`configs/data/llbench.yaml` is the template written out in full).
Partial maps are merged over the canonical defaults, and unknown keys are errors that list the valid ones, so a
typo in a config cannot silently fall back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llscore.data import schema

TABLES = {
    "images": schema.IMAGES,
    "pairs": schema.PAIRS,
    "scores": schema.SCORES,
    "hallucination": schema.HALLUCINATION,
    "rankings": schema.RANKINGS,
}
"""Short table names used in configs and reports -> canonical file paths relative to the bench root."""
OPTIONAL_TABLES = ("pairs", "hallucination", "rankings")
"""Tables a bench may lack (docs/data_contract.md): the images and their human scores are what every dataset
gives; without one of these the metrics that need it are skipped, and the report says so."""

DEFAULT_VOCAB = {
    "kind": {k: [k] for k in schema.KINDS},
    "model_family": {
        "lgm": ["lgm", "large generative model", "generative"],
        "conventional": ["conventional", "traditional", "classic"],
    },
    "preference": {
        "a": ["a", "left", "first", "image_a"],
        "b": ["b", "right", "second", "image_b"],
        "tie": ["tie", "equal", "same", "draw"],
    },
    "hallucination": {"1": ["yes", "true", "hallucinated"], "0": ["no", "false", "faithful"]},
}
"""Canonical value -> accepted spellings (matched after strip + lower-case); the canonical value is always accepted.

Hallucination cells outside this vocabulary are read as numbers (0/1 or a vote fraction in [0, 1]).
"""

CANONICAL_VALUES = {
    "kind": schema.KINDS,
    "model_family": schema.FAMILIES,
    "preference": schema.PREFERENCES,
    "hallucination": ("1", "0"),
}
SPLITS = ("train", "val", "test")


def _default_columns() -> dict[str, dict[str, str]]:
    return {name: {c: c for c in schema.COLUMNS[path]} for name, path in TABLES.items()}


def _unknown(what: str, given, valid) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid keys: {sorted(valid)}")


@dataclass
class DataConfig:
    """How to read one LL-Bench release and turn it into a prepared dataset."""

    files: dict[str, str] = field(default_factory=lambda: dict(TABLES))
    columns: dict[str, dict[str, str]] = field(default_factory=_default_columns)
    vocab: dict[str, dict[str, list[str]]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_VOCAB))
    ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    seed: int = 0
    holdout_models: list[str] = field(default_factory=list)
    """Restoration models held out of training and validation: their outputs are in the test split only, so
    eval.py measures the evaluator on models it never saw (docs/data_contract.md)."""
    num_workers: int = 8
    min_std: float = 0.1
    """Floor on the normalised std of a soft target: a zero std would put all mass on one level."""
    default_std: float = 0.5
    """Normalised std used where the scores table gives none."""
    preview_rows: int = 20

    def __post_init__(self):
        _unknown("tables in files", self.files, TABLES)
        _unknown("tables in columns", self.columns, TABLES)
        _unknown("vocabularies", self.vocab, DEFAULT_VOCAB)
        self.files = {**TABLES, **self.files}
        columns = _default_columns()
        for table, mapping in self.columns.items():
            _unknown(f"columns of table '{table}'", mapping, columns[table])
            columns[table].update(mapping)
        self.columns = columns
        vocab = copy.deepcopy(DEFAULT_VOCAB)
        for name, mapping in self.vocab.items():
            mapping = {str(k): v for k, v in mapping.items()}
            _unknown(f"values of vocabulary '{name}'", mapping, CANONICAL_VALUES[name])
            vocab[name].update(
                {
                    k: [str(s) for s in ([v] if isinstance(v, str | int | float) else v)]
                    for k, v in mapping.items()
                }
            )
        self.vocab = vocab
        _unknown("split names in ratios", self.ratios, SPLITS)
        self.ratios = {s: float(self.ratios.get(s, 0.0)) for s in SPLITS}
        if any(r < 0 for r in self.ratios.values()) or abs(sum(self.ratios.values()) - 1) > 1e-6:
            raise ValueError(f"split ratios must be non-negative and sum to 1, got {self.ratios}")
        if isinstance(self.holdout_models, str) or len(set(self.holdout_models)) != len(self.holdout_models):
            raise ValueError(
                f"holdout_models must be a list of distinct model names, got {self.holdout_models!r}"
            )
        self.holdout_models = [str(m) for m in self.holdout_models]
        if self.holdout_models and self.ratios["test"] == 0:
            raise ValueError(
                "holdout_models needs a test split (ratios.test > 0): held-out models are tested only"
            )
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if not (self.min_std > 0 and self.default_std > 0):
            raise ValueError(f"min_std and default_std must be > 0, got {self.min_std}, {self.default_std}")
        spellings = {
            name: [(s.strip().lower(), k) for k, v in m.items() for s in (k, *v)]
            for name, m in self.vocab.items()
        }
        for name, pairs in spellings.items():
            meaning = {}
            for spelling, value in pairs:
                if meaning.setdefault(spelling, value) != value:
                    raise ValueError(
                        f"vocabulary '{name}': {spelling!r} means both {meaning[spelling]!r} and {value!r}"
                    )

    def lookup(self, name: str) -> dict[str, str]:
        """Spelling (stripped, lower-case) -> canonical value for vocabulary `name`."""
        return {s.strip().lower(): k for k, v in self.vocab[name].items() for s in (k, *v)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataConfig:
        _unknown("data config keys", data, {f.name for f in dataclasses.fields(cls)})
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DataConfig:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e


def data_config_at(path: str | Path | None) -> DataConfig:
    """The data config at `path`, or the canonical one: the one default of data_prep, train.py and eval.py
    (`DataConfig()`, written out in full in configs/data/llbench.yaml)."""
    return DataConfig.from_yaml(path) if path else DataConfig()
