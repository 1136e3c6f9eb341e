"""The reward loops: (a) back-propagating LL-Score's reward through the frozen scorer, (b) group-relative sampling
with the reward as a black box, both inside a low-pass trust region around the degraded input
(examples/reward_finetune.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llscore import LLScoreReward

from .data import Sources, batches


def fidelity(restored: torch.Tensor, degraded: torch.Tensor, tolerance: float, pool: int = 8) -> torch.Tensor:
    """Squared excess of the 8x-average-pooled difference to the input over `tolerance`: a trust region.

    Noise, blur and compression barely move 8x8 means, so inside the region a restorer is free to remove them;
    painting over the image (the cheapest way to please a scorer that has not learned what people want) is
    expensive. Without the tolerance the minimum would be the identity, and Adam walks there.
    """
    excess = (F.avg_pool2d(restored, pool) - F.avg_pool2d(degraded, pool)).abs() - tolerance
    return excess.clamp_min(0).square().mean()


@dataclass
class FinetuneSettings:
    steps: int = 60
    lr: float = 5e-4
    batch_size: int = 4
    fidelity_weight: float = 100.0
    fidelity_tolerance: float = 8 / 255  # 8x8-mean change allowed for free
    group_size: int = 8  # sampling variant: stochastic outputs per input
    sigma: float = 0.03  # sampling variant: scale of the smooth exploration noise around the output
    seed: int = 0


def _finetune(restorer, train: Sources, settings: FinetuneSettings, desc: str, objective) -> list[float]:
    """The loop both variants share: Adam on the restorer, `objective(degraded, restored) -> (loss, batch
    reward)` plus the trust region; returns the batch reward per step."""
    optimiser = torch.optim.Adam(restorer.parameters(), lr=settings.lr)
    history = []
    for index in tqdm(
        list(batches(len(train.ids), settings.batch_size, settings.steps, settings.seed)), desc=desc
    ):
        degraded = train.degraded[index]
        restored = restorer(degraded)
        loss, batch_reward = objective(degraded, restored)
        loss = loss + settings.fidelity_weight * fidelity(restored, degraded, settings.fidelity_tolerance)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(batch_reward)
    return history


def differentiable_finetune(restorer, reward: LLScoreReward, train: Sources, settings: FinetuneSettings):
    """(a) Gradient ascent on the reward through the frozen scorer; returns the batch reward per step."""

    def objective(degraded, restored):
        values = reward.differentiable(restored, degraded)
        return -values.mean(), values.mean().item()

    return _finetune(restorer, train, settings, "(a) differentiable reward", objective)


def smooth_noise(shape, generator: torch.Generator, cell: int = 8) -> torch.Tensor:
    """U·ε: standard normal ε on a grid `cell` times coarser, upsampled bicubically by the fixed linear map U.

    A generator's variation is structured, and a black-box search only works in few dimensions: 3x16x16 at
    128 px instead of 3x128x128 (with per-pixel noise, 8 samples per input give no usable direction).
    """
    n, c, h, w = shape
    coarse = torch.randn(n, c, -(-h // cell), -(-w // cell), generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO's advantage: each sample's reward standardised within its group (row); a flat group gives zeros."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-6)


def sampling_finetune(restorer, reward: LLScoreReward, train: Sources, settings: FinetuneSettings):
    """(b) Group-relative policy gradient with the reward as a black box; returns the mean group reward per step.

    Sampling: x = μ + σ·U·ε with μ = restorer(degraded) (`smooth_noise`), emitted clipped to [0, 1] (the
    clip belongs to the environment). Update: descend −Σ A·‖x − μ‖²/2σ², whose gradient in μ is
    −Σ A·(x − μ)/σ² = −Σ A·U·ε/σ: the evolution-strategies form of the likelihood-ratio policy gradient of
    this Gaussian policy (covariance σ²UUᵀ), preconditioned by UUᵀ. It pulls μ towards the samples that beat
    their group and away from those that lost. The squared distance is averaged over pixels (the sum / D, a
    constant rescaling) so that `fidelity_weight` means the same in both variants.
    """
    generator = torch.Generator().manual_seed(settings.seed)

    def objective(degraded, mean):
        n, group = len(degraded), settings.group_size
        noise = smooth_noise((n * group, *mean.shape[1:]), generator).to(mean.device)
        actions = mean.detach().repeat_interleave(group, 0) + settings.sigma * noise
        rewards = reward(actions.clamp(0, 1), degraded.repeat_interleave(group, 0))
        advantages = group_advantages(rewards.to(mean.device).view(n, group))
        log_prob = -(actions - mean.repeat_interleave(group, 0)).square().flatten(1).mean(1) / (
            2 * settings.sigma**2
        )
        return -(advantages.flatten() * log_prob).mean(), rewards.mean().item()

    return _finetune(restorer, train, settings, "(b) group-relative sampling", objective)


DIFFERENTIABLE = "(a) differentiable reward"
SAMPLING = "(b) group-relative sampling"
VARIANTS = {DIFFERENTIABLE: differentiable_finetune, SAMPLING: sampling_finetune}
