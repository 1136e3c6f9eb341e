"""The restoration network fine-tuned on the reward: a small residual CNN (or any image-to-image module from a
`module:function` factory) and its supervised L1 pretraining (examples/reward_finetune.py)."""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Sources, batches


class ResidualCNN(torch.nn.Module):
    """degraded -> degraded + a learned residual; the last layer starts at zero, so training starts at identity."""

    def __init__(self, width: int = 32, depth: int = 5):
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU()]
        for _ in range(depth - 2):
            layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(width, 3, 3, padding=1))
        torch.nn.init.zeros_(layers[-1].weight)
        torch.nn.init.zeros_(layers[-1].bias)
        self.body = torch.nn.Sequential(*layers)

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        return (degraded + self.body(degraded)).clamp(0, 1)


def build_restorer(spec: str | None) -> torch.nn.Module:
    """The built-in ResidualCNN, or `module:function` returning any image-to-image nn.Module."""
    if spec is None:
        return ResidualCNN()
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--restorer must look like package.module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)()


def pretrain(restorer, train: Sources, steps: int, lr: float, batch_size: int, seed: int) -> list[float]:
    """Supervised L1 to the clean reference, with random flips; returns the loss per step."""
    optimiser = torch.optim.Adam(restorer.parameters(), lr=lr)
    losses = []
    for step, index in enumerate(
        tqdm(list(batches(len(train.ids), batch_size, steps, seed)), desc="pretrain")
    ):
        degraded, clean = train.degraded[index], train.clean[index]
        if step % 2:
            degraded, clean = degraded.flip(-1), clean.flip(-1)
        loss = F.l1_loss(restorer(degraded), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses
