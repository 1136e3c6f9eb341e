"""LL-Score as a reward for training restoration / generative models.

reward = quality score in [1, 5] − λ · P(hallucination), λ = `hallucination_weight` ≥ 0 (the larger, the more a
likely hallucination costs; 0: quality alone), computed by the same scoring path as evaluation:
`__call__` (no gradients, batched; for sampling-based updates such as best-of-N or GRPO) or `differentiable`
(gradients flow through the frozen scorer back to the pixels of the restored images). Image-RL frameworks
call it through `llscore.serving` (docs/serving.md).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from llscore.api import LLScore
from llscore.scoring import ImageLike


def checked_weight(weight) -> float:
    """λ as a number: NaN would make every reward NaN, a string fail deep inside torch, and a negative λ reward
    the hallucinations it is meant to cost."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, numbers.Real)
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(
            f"hallucination_weight must be a finite number >= 0, got {weight!r}; the reward is "
            "quality - hallucination_weight * P(hallucination)"
        )
    return float(weight)


class LLScoreReward:
    """Callable reward: `reward(images, degraded) -> tensor` of shape (n,). The scorer is frozen on construction."""

    def __init__(self, scorer: LLScore, hallucination_weight: float = 1.0, batch_size: int = 8):
        self.scorer = scorer
        self.hallucination_weight = checked_weight(hallucination_weight)
        self.batch_size = batch_size
        scorer.model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id, hallucination_weight: float = 1.0, batch_size: int = 8, **load_kwargs
    ):
        return cls(LLScore.from_pretrained(path_or_hub_id, **load_kwargs), hallucination_weight, batch_size)

    def combine(self, quality: torch.Tensor, p_hallucination: torch.Tensor | None) -> torch.Tensor:
        """The one definition of the reward from its two readings."""
        if p_hallucination is None or self.hallucination_weight == 0:
            return quality
        return quality - self.hallucination_weight * p_hallucination

    def __call__(
        self, images: Sequence[ImageLike], degraded: Sequence[ImageLike] | None = None
    ) -> torch.Tensor:
        results = self.scorer.score(
            images, degraded, batch_size=self.batch_size, hallucination=self.hallucination_weight != 0
        )
        p_hallucination = (
            None if results.p_hallucination is None else torch.from_numpy(results.p_hallucination)
        )
        return self.combine(torch.from_numpy(results.score), p_hallucination)

    def differentiable(self, images: torch.Tensor, degraded: torch.Tensor | None = None) -> torch.Tensor:
        """Reward of a (n, 3, H, W) batch in [0, 1] with gradients to `images` (one batch, no chunking).

        The images go through the checkpoint's own image processor as tensors, so the reward optimised is the
        reward `__call__` and `eval.py` report, up to the rounding of 8-bit PNGs.
        """
        quality, p_hallucination = self.scorer.read(images, degraded, self.hallucination_weight != 0)
        return self.combine(quality.score, p_hallucination)
