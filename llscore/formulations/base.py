"""What a formulation is: everything that differs between two ways of reading LL-Score's two answers
(docs/architecture.md). The loader, the trainer, the scorer and the Hub card ask the checkpoint's formulation and
branch on nothing themselves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch

from llscore.prompts import LLScoreConfig, PromptContract
from llscore.scoring import ScoringBackend

Objective = Callable[..., dict[str, torch.Tensor]]
"""`objective(model, batch)`: each loss term of the formulation, unweighted (docs/training.md)."""


class Formulation:
    """The hooks a formulation fills; the defaults are those of a formulation that adds nothing to the model
    (no tokens, no module, no file of its own)."""

    name: str
    loss_terms: tuple[str, ...]
    """The `LLScoreTrainingArguments` weights that this formulation trains with."""
    files: tuple[str, ...] = ()
    """Files of its own in a checkpoint folder, saved beside the transformers / peft weights."""
    card_tags: tuple[str, ...] = ()
    """Its tags on the model card (the Hub's search facets)."""
    card_fields: ClassVar[dict] = {}
    """What the model card template (llscore/templates/model_card.md) reads of it: how it is loaded and read."""

    def questions(self, with_hallucination: bool) -> tuple[str, ...]:
        """What a training batch asks (`llscore.collator.PairCollator`)."""
        raise NotImplementedError

    # loading and saving

    def setup_for_training(self, model, tokenizer, contract: PromptContract, start: Path) -> tuple[int, ...]:
        """Before any LoRA wrapping: the tokens and modules the formulation adds, from `start` (the weights being
        trained on) when it holds them. Returns the ids of the embedding rows that train alone under LoRA."""
        return ()

    def after_wrapping(self, model) -> None:
        """After peft wrapped the model (which freezes what it does not wrap)."""

    def setup_base_for_adapter(self, base_model, tokenizer, contract: PromptContract) -> None:
        """Before a LoRA adapter is loaded over `base_model`: room for what the adapter saved."""

    def load_own_files(self, model, folder: Path) -> None:
        """After the weights are loaded: what the formulation saved in its own `files`."""

    def own_state(self, model) -> dict[str, torch.Tensor] | None:
        """The weights saved in `files` (every process calls it: ZeRO-3 gathers them), or None."""
        return None

    def write_own_state(self, state: dict[str, torch.Tensor], folder: Path) -> None:
        """Write what `own_state` returned into `folder`."""

    def reload_in_place(self, model, folder: Path) -> None:
        """On resume and best-model loading: `files` loaded into the model's own parameters, so that an optimizer
        keeps holding them."""

    def is_own_parameter(self, name: str) -> bool:
        """A parameter that lives in the formulation's own files, not in the model's weight files."""
        return False

    # training

    def setup_trainer_model(self, model, tokenizer, config: LLScoreConfig, args) -> None:
        """Once, before a DDP or DeepSpeed wrapper is put around the model being trained."""

    def objective(self, tokenizer, config: LLScoreConfig, args) -> Objective:
        """The loss terms of one batch (`questions`' inputs and the human targets)."""
        raise NotImplementedError

    # scoring

    def backend(self, model, processor, config: LLScoreConfig) -> ScoringBackend:
        """The transformers model read this formulation's way (`llscore.scoring.ScoringBackend`)."""
        raise NotImplementedError


def with_known_labels(label: torch.Tensor) -> torch.Tensor:
    """Where a hallucination label is known (unlabelled items are NaN)."""
    return ~torch.isnan(label)
