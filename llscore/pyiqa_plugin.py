"""LL-Score as a pyiqa metric: `pyiqa.create_metric("llscore", ckpt=...)`, the degraded input as the reference
(docs/serving.md, "pyiqa").

pyiqa finds the network through its entry-point group `pyiqa.archs` (pyproject.toml names `register`), and
`register` also adds the metric's entry to pyiqa's table of metrics. pyiqa 0.1.16's `create_metric` reads that
table before it loads plugins, so a fresh process imports this module first (`import llscore.pyiqa_plugin`),
or lets pyiqa's registry load its plugins (`"LLScore" in pyiqa.utils.registry.ARCH_REGISTRY`).
"""

from __future__ import annotations

import torch
from torch import nn

METRIC_NAME = "llscore"
ARCH_NAME = "LLScore"
OUTPUTS = ("reward", "quality", "p_hallucination")


class LLScoreArch(nn.Module):
    """pyiqa's network for LL-Score: `forward(target, ref)` → (B,) of `output` for restored images `target`
    (B, 3, H, W) in [0, 1] and their degraded inputs `ref` (or None). With gradients enabled (pyiqa's
    `as_loss=True`) the reading is differentiable, as `LLScoreReward.differentiable`."""

    def __init__(
        self,
        ckpt: str | None = None,
        output: str = "reward",
        hallucination_weight: float = 1.0,
        dtype: str = "float32",
        pretrained_model_path: str | None = None,
    ):
        super().__init__()
        from llscore.reward import LLScoreReward

        ckpt = ckpt or pretrained_model_path
        if ckpt is None:
            raise ValueError(
                'pyiqa.create_metric("llscore", ckpt=...): name the LL-Score checkpoint (folder or Hub id)'
            )
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: choose one of {', '.join(OUTPUTS)}")
        self.output = output
        self.reward = LLScoreReward.from_pretrained(ckpt, hallucination_weight, dtype=dtype)
        self.model = self.reward.scorer.model  # a submodule: pyiqa's `.to(device)` moves the scorer

    def forward(self, target: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        degraded = None if ref is None else list(ref)
        if torch.is_grad_enabled():
            quality, p_hallucination = self.reward.scorer.read(list(target), degraded, True)
            values = {"quality": quality.score, "p_hallucination": p_hallucination}
        else:
            results = self.reward.scorer.score(list(target), degraded, batch_size=len(target))
            values = {
                "quality": torch.from_numpy(results.score),
                "p_hallucination": torch.from_numpy(results.p_hallucination),
            }
        values["reward"] = self.reward.combine(values["quality"], values["p_hallucination"])
        return values[self.output].to(target.device)


def register() -> None:
    """Add LL-Score to pyiqa: its network to the arch registry, its entry to the metric table (idempotent)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY

    ARCH_REGISTRY.register(LLScoreArch, name=ARCH_NAME, override=True)
    DEFAULT_CONFIGS.setdefault(
        METRIC_NAME,
        {
            "metric_opts": {"type": ARCH_NAME},
            "metric_mode": "FR",  # the reference is the degraded input
            "lower_better": False,
            "score_range": "~-1, 5",  # the reward: quality in [1, 5] minus P(hallucination)
        },
    )


register()
