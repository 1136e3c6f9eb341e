"""The formulations, by the name a checkpoint's `llscore_config.json` gives (docs/architecture.md): "levels" reads
the answer words' logits, "heads" the LL-Bench paper's <QUAL>/<HAL> heads. A new formulation is one module with
a `Formulation` subclass, listed here and in `llscore.prompts.FORMULATIONS` (the contract's names)."""

from __future__ import annotations

from pathlib import Path

from llscore.errors import CheckpointError
from llscore.formulations.base import Formulation
from llscore.formulations.heads import Heads
from llscore.formulations.levels import Levels
from llscore.prompts import FORMULATIONS, LLScoreConfig, check_formulation

REGISTRY: dict[str, Formulation] = {formulation.name: formulation for formulation in (Levels(), Heads())}
assert tuple(REGISTRY) == FORMULATIONS, "llscore.prompts.FORMULATIONS names every registered formulation"

OWN_FILES = tuple(name for formulation in REGISTRY.values() for name in formulation.files)
"""Every formulation's own files: what a checkpoint folder may hold beside the transformers / peft files."""


def formulation_of(config: LLScoreConfig | str) -> Formulation:
    """The formulation a contract (or a formulation name) names."""
    return REGISTRY[check_formulation(config if isinstance(config, str) else config.formulation)]


def check_own_files(formulation: Formulation, folder: Path, name) -> None:
    """A checkpoint holds its formulation's own files and no other formulation's: a folder whose files come from
    two checkpoints, or whose contract was edited, is refused before anything loads."""
    for file in formulation.files:
        if not (folder / file).is_file():
            raise CheckpointError(
                f"{name}: its llscore_config.json says '{formulation.name}' but it has no {file}"
            )
    for other in REGISTRY.values():
        for file in set(other.files) - set(formulation.files):
            if (folder / file).is_file():
                raise CheckpointError(
                    f"{name}: its llscore_config.json says '{formulation.name}' but it holds {file} (a "
                    f"'{other.name}' checkpoint's file): its files come from two checkpoints, or its contract "
                    "was edited"
                )


__all__ = ["OWN_FILES", "REGISTRY", "Formulation", "check_own_files", "formulation_of"]
