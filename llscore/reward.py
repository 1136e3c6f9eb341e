"""LL-Score as a reward for training restoration / generative models.

reward = quality score in [1, 5] − λ · P(hallucination). Computed by `LLScore.score`, i.e. the same scoring
path as evaluation, deterministic (no sampling) and batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llscore.evaluator import LLScore
from llscore.scoring import ImageLike


class LLScoreReward:
    """Callable reward: `reward(images, degraded) -> tensor` of shape (n,)."""

    def __init__(self, scorer: LLScore, hallucination_weight: float = 1.0, batch_size: int = 8):
        self.scorer = scorer
        self.hallucination_weight = hallucination_weight
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id, hallucination_weight: float = 1.0, batch_size: int = 8, **load_kwargs
    ):
        return cls(LLScore.from_pretrained(path_or_hub_id, **load_kwargs), hallucination_weight, batch_size)

    def __call__(
        self, images: Sequence[ImageLike], degraded: Sequence[ImageLike] | None = None
    ) -> torch.Tensor:
        use_hallucination = self.hallucination_weight != 0
        results = self.scorer.score(
            images, degraded, batch_size=self.batch_size, hallucination=use_hallucination
        )
        reward = torch.from_numpy(results.score)
        if use_hallucination:
            reward = reward - self.hallucination_weight * torch.from_numpy(results.p_hallucination)
        return reward

    def grpo_reward_func(self):
        """A function with TRL's GRPO `reward_funcs` signature: completions are the generated images and the
        dataset's `degraded` column arrives as a keyword argument."""

        def llscore_reward(prompts, completions, degraded=None, **kwargs) -> list[float]:
            return self(completions, degraded).tolist()

        return llscore_reward
