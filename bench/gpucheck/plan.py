"""The parts of one model, in order: build it, train it with the recipes (the recipes' own model only, unless told),
then score with it, one part per resolution and batch size, each with its minimum time (bench/gpu_check.py)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from .budget import CpuBudget
from .common import GIB, TRAINED, TRAINING_RECIPES, Setting, resolution_of
from .guard import PartSkipped, check_memory, part_memory
from .models import architecture, build
from .scoring import scoring_row
from .training import training, training_in_child


def model_parts(
    name: str,
    work: Path,
    setting: Setting,
    dry_run: bool,
    peak: float | None,
    budget: CpuBudget | None = None,
    train: bool | None = None,
    score: bool = True,
    recipes: tuple[str, ...] = tuple(TRAINING_RECIPES),
) -> list:
    """Build the model, train it (the recipes' own model only, unless `train` says), then score with it, one part
    per row. With a `budget` (real sizes on CPU) each part's time is estimated when it is reached and its memory
    checked before it allocates."""
    loaded: dict = {"path": work / name}

    def build_part() -> dict:
        if budget:
            check_memory(f"build {name}", 2 * architecture(name)["total"], budget.max_rss)
        with part_memory(setting, budget) as memory:
            built = build(name, work, setting, dry_run)
        loaded.update(built)
        return {**built, **(memory.row() if memory else {})}

    def after_build(part: Callable[[], dict]) -> Callable[[], dict]:
        def guarded() -> dict:
            if "parameters" not in loaded:
                raise PartSkipped(f"{name} was not built (its build part says why)")
            return part()

        return guarded

    def scoring_part(side: int | None, batch: int) -> dict:
        if budget and "scorer" not in loaded:
            check_memory(f"scoring {name}", 2 * architecture(name)["total"] + GIB, budget.max_rss)
        with part_memory(setting, budget) as memory:
            row = scoring_row(loaded, name, side, batch, setting, dry_run, peak)
        if budget:
            budget.observe(row)
        return {**row, **(memory.row() if memory else {})}

    def minimum(kind: str, side: int | None = None, batch: int = 1) -> float | Callable[[], float]:
        if budget is None:
            return setting.budgets.get(kind, 0)
        side = side or int(resolution_of(name, dry_run).max_pixels ** 0.5)
        if kind == "build":
            return lambda: budget.build_s(name)
        if kind == "training":
            return lambda: budget.training_s(name, setting.train_side or side)
        return lambda: budget.scoring_s(name, side, batch, "scorer" in loaded)

    parts = [(f"build {name}", build_part, minimum("build"))]
    if name == TRAINED if train is None else train:
        parts += [
            (
                f"training {kind} {name}",
                after_build(
                    partial(training_in_child, work / name, recipe, setting, work, dry_run, budget)
                    if budget
                    else partial(training, work / name, recipe, setting, work, dry_run)
                ),
                minimum("training"),
            )
            for kind, recipe in TRAINING_RECIPES.items()
            if kind in recipes
        ]
    if score:
        parts += [
            (
                f"scoring {name} {label} batch {batch}",
                after_build(partial(scoring_part, side, batch)),
                minimum("scoring", side, batch),
            )
            for label, side in setting.image_sides.items()
            for batch in setting.batches
        ]
    return parts
