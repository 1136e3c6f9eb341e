"""The training batches: one human-compared pair of restorations per example, both images of a pair in the same
batch, asked the formulation's questions (docs/training.md)."""

from __future__ import annotations

import random

import torch
from PIL import Image

from llscore.scoring import InputBuilder


class PairCollator:
    """Rows of `pair_examples` -> processor inputs for both questions plus the targets.

    A batch's paraphrases and augmentations are a function of the seed and its example ids alone (not of any
    RNG state), so a resumed run sees exactly what the uninterrupted run saw. `augment_scale` < 1 crops the
    degraded input and both restorations of a pair with the same random box (side >= scale) and flips them
    together, so the comparison the humans made is preserved while the exact pixels vary.
    """

    def __init__(
        self,
        builder: InputBuilder,
        with_hallucination: bool,
        paraphrase: bool,
        seed: int = 0,
        augment_scale: float = 1.0,
        questions: tuple[str, ...] | None = None,
    ):
        """`questions`: what each batch asks, the formulation's (`Formulation.questions`); by default the quality
        question, and the hallucination question when `with_hallucination`."""
        self.builder = builder
        self.with_hallucination = with_hallucination
        self.questions = questions or (("quality", "hallucination") if with_hallucination else ("quality",))
        self.paraphrase = paraphrase
        self.seed = seed
        self.augment_scale = augment_scale

    def _rng(self, rows: list[dict], purpose: str) -> random.Random:
        return random.Random(f"{self.seed}/{purpose}/{','.join(str(r['example_id']) for r in rows)}")

    def _questions(self, rows: list[dict], task: str) -> random.Random | None:
        """The RNG that picks paraphrases (None: the canonical question)."""
        return self._rng(rows, task) if self.paraphrase else None

    def _augmented(self, rows: list[dict]) -> tuple[list, list]:
        """(restored A... + restored B..., degraded ... twice), decoded and checked (the family's limits, the
        error naming the file) once for both questions, and cropped and flipped alike within each pair when
        augmenting."""
        if self.augment_scale >= 1.0:
            restored = [self.builder.load(r[k]) for k in ("restored_a", "restored_b") for r in rows]
            return restored, [self.builder.load(r["degraded"]) for r in rows] * 2
        rng = self._rng(rows, "augment")
        triples = []
        for row in rows:
            images = [self.builder.load(row[k]) for k in ("degraded", "restored_a", "restored_b")]
            width, height = images[1].size
            side = rng.uniform(self.augment_scale, 1.0)
            w, h = round(width * side), round(height * side)
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            flip = rng.random() < 0.5
            box = (left, top, left + w, top + h)
            triples.append(
                [
                    (im if im.size == (width, height) else im.resize((width, height))).crop(box)
                    for im in images
                ]
            )
            if flip:
                triples[-1] = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in triples[-1]]
        restored = [t[1] for t in triples] + [t[2] for t in triples]
        return restored, [t[0] for t in triples] * 2

    def __call__(self, rows: list[dict]) -> dict:
        restored, degraded = self._augmented(rows)
        asked = self.builder.ask({q: self._questions(rows, q) for q in self.questions}, restored, degraded)
        batch = {f"{question}_inputs": asked[question] for question in self.questions}
        batch["soft_target"] = torch.tensor(
            [r["soft_target_a"] for r in rows] + [r["soft_target_b"] for r in rows], dtype=torch.float32
        )
        batch["p_human"] = torch.tensor([r["p_a_better"] for r in rows], dtype=torch.float32)
        if self.with_hallucination:
            batch["hallucination_label"] = torch.tensor(
                [r["hallucination_a"] for r in rows] + [r["hallucination_b"] for r in rows],
                dtype=torch.float32,
            )
        return batch
