"""The level formulation (Q-Align style, docs/training.md): each answer is read from the logits of the contract's
answer words after the answer stem. The quality score is the expected level weight under the softmax over the
level words; P(hallucination) is the softmax over " Yes" / " No". Nothing is added to the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llscore.formulations.base import Formulation, with_known_labels
from llscore.losses import hallucination_bce, level_token_ce, soft_label_kl, thurstone_fidelity
from llscore.prompts import LLScoreConfig
from llscore.scoring import (
    InputBuilder,
    QualityReading,
    answers,
    check_answer_words,
    hallucination_logit,
    read_hallucination,
    read_quality,
    thurstone_probability,
)


class AnswerReader:
    """Token ids and weights of the contract's answer words for one tokenizer."""

    def __init__(self, tokenizer, config: LLScoreConfig):
        ids = check_answer_words(tokenizer, config.prompts)
        self.level_ids = [ids[w] for w in config.prompts.level_words]
        self.yes_no_ids = [ids[w] for w in config.prompts.yes_no_words]
        self.weights = torch.tensor(config.prompts.level_weights, dtype=torch.float32)

    def quality(self, logits: torch.Tensor) -> QualityReading:
        return read_quality(logits, self.level_ids, self.weights)

    def hallucination(self, logits: torch.Tensor) -> torch.Tensor:
        return read_hallucination(logits, self.yes_no_ids)

    def hallucination_logit(self, logits: torch.Tensor) -> torch.Tensor:
        return hallucination_logit(logits, self.yes_no_ids)


@dataclass(frozen=True)
class TaskInputs:
    """The level backend's `prepare`: the processor's inputs of each task asked. Model-free, so that a
    DataLoader's worker processes run it."""

    builder: InputBuilder

    def __call__(self, restored: list, degraded: list | None, tasks: Sequence[str]) -> dict:
        return self.builder.ask(dict.fromkeys(tasks), restored, degraded)  # each image decoded once for all


class LevelBackend:
    """The transformers model with its processor: one forward per question, the answer words' logits read at the
    last position (`InputBuilder`, `answer_logits`, `AnswerReader`)."""

    def __init__(self, model, processor, config: LLScoreConfig):
        self.model, self.processor = model, processor
        self.builder = InputBuilder(processor, config)
        self.prepare = TaskInputs(self.builder)
        self.reader = AnswerReader(processor.tokenizer, config)

    def read(self, inputs: dict) -> tuple[QualityReading, torch.Tensor | None]:
        device = next(self.model.parameters()).device
        tasks = [task for task in ("quality", "hallucination") if task in inputs]
        logits = dict(zip(tasks, answers(self.model, [inputs[t].to(device) for t in tasks]), strict=True))
        quality = self.reader.quality(logits["quality"])
        if "hallucination" not in logits:
            return quality, None
        return quality, self.reader.hallucination(logits["hallucination"])


class LevelObjective:
    """Soft-label KL on each restoration's level distribution, Thurstone fidelity on each compared pair, and when
    their weights are non-zero the level word's cross-entropy and BCE on the hallucination answer."""

    def __init__(self, tokenizer, config: LLScoreConfig, args):
        self.reader = AnswerReader(tokenizer, config)
        self.level_ce = bool(args.level_ce)
        self.hallucination = bool(args.hallucination_bce)

    def __call__(self, model, inputs) -> dict[str, torch.Tensor]:
        questions = ["quality_inputs", "hallucination_inputs"] if self.hallucination else ["quality_inputs"]
        logits, *hallucination_logits = answers(model, [inputs[q] for q in questions])
        reading = self.reader.quality(logits)
        n_pairs = inputs["p_human"].shape[0]
        p_model = thurstone_probability(
            reading.score[:n_pairs], reading.std[:n_pairs], reading.score[n_pairs:], reading.std[n_pairs:]
        )
        terms = {
            "quality_kl": soft_label_kl(reading.level_logits, inputs["soft_target"]),
            "pair_fidelity": thurstone_fidelity(p_model, inputs["p_human"]),
        }
        if self.level_ce:
            terms["level_ce"] = level_token_ce(logits, self.reader.level_ids, inputs["soft_target"])
        if self.hallucination:
            log_odds = self.reader.hallucination_logit(hallucination_logits[0])
            label = inputs["hallucination_label"]
            known = with_known_labels(label)
            terms["hallucination_bce"] = hallucination_bce(log_odds[known], label[known])
        return terms


class Levels(Formulation):
    name = "levels"
    loss_terms = ("quality_kl", "pair_fidelity", "hallucination_bce", "level_ce")

    def questions(self, with_hallucination: bool) -> tuple[str, ...]:
        return ("quality", "hallucination") if with_hallucination else ("quality",)

    def objective(self, tokenizer, config: LLScoreConfig, args) -> LevelObjective:
        return LevelObjective(tokenizer, config, args)

    def backend(self, model, processor, config: LLScoreConfig) -> LevelBackend:
        return LevelBackend(model, processor, config)
