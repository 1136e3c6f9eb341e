"""The simulators' recipe keys: which simulated inputs a run makes when they are missing (docs/training.md).

They are flat recipe keys like the library's (`configs/llscore_tiny.yaml` sets them), parsed by the library's
recipe parser as one more section (`llscore.config.load_config(..., sections=...)`), so the library knows
nothing of the simulators. train.py reads recipes with `load_config` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llscore import config as recipes


@dataclass
class SimulatorSettings:
    """`generate_mini_bench` writes LL-Bench-mini (`mini_bench_sources` sources, seed `mini_bench_seed`) into
    `bench_dir`. `build_tiny_base` names a Qwen-VL family whose tiny base is built at `model_name_or_path` when
    it is missing, with the weights in `tiny_base_weights` when given (the shipped low-level-pretrained tiny
    base, docs/training.md) or a random initialisation."""

    generate_mini_bench: bool = False
    mini_bench_sources: int = 80
    mini_bench_seed: int = 0
    build_tiny_base: str | None = None
    tiny_base_weights: str | None = None

    input_files: ClassVar[tuple[str, ...]] = ("tiny_base_weights",)
    """Checked when the recipe is read: a missing file is named by its key."""
    repo_paths: ClassVar[tuple[str, ...]] = ("tiny_base_weights",)
    """Relative values in a shipped recipe are paths in the repo."""
    builds: ClassVar[dict[str, str]] = {"build_tiny_base": "model_name_or_path"}
    """A shipped recipe that sets `build_tiny_base` builds its `model_name_or_path` in the repo."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> recipes.TrainConfig:
    """A recipe with the simulators' keys (`llscore.config.load_config` with `SimulatorSettings`); its
    settings are `config.section(SimulatorSettings)`."""
    return recipes.load_config(path, overrides, sections=(SimulatorSettings,))
