"""The held-out judgement of a restorer's outputs: the scorer's readings and reward, what LL-Bench-mini's simulated
people perceive, PSNR to the clean reference, and the reward-hacking verdict of each fine-tuned variant
(examples/reward_finetune.py; docs/llbench_mini.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from llscore import LLScoreReward
from llscore_sim.mini_bench.perception import perceive

from .data import Sources


def eight_bit(images: torch.Tensor) -> torch.Tensor:
    """What a saved PNG holds: everything is evaluated on 8-bit outputs."""
    return (images * 255).round() / 255


def _psnr(clean: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB; the reference itself gets inf without a divide-by-zero warning."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(clean, image, data_range=1.0))


def utility(image: np.ndarray, degraded: np.ndarray, agreed: np.ndarray) -> float:
    """What LL-Bench-mini's simulated people perceive in an output the simulation did not make (docs/llbench_mini.md).

    The output is judged as an annotator would see it: beside its degraded input and the bench's own
    restorations of that input (`agreed`, their consensus). A new output comes with no hallucination mask, so
    this utility cannot charge a hallucination: P(hallucination) and PSNR to the clean reference stand beside it.
    For the bench's own faithful outputs it is their ground-truth utility up to one constant (the pool's mean
    false-alarm penalty; tested).
    """
    faithful = np.zeros((1, *image.shape[:2]), dtype=bool)
    return perceive(degraded, image[None], faithful, agreed=agreed)[0].base_utility


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def evaluate_outputs(images: torch.Tensor, sources: Sources, reward: LLScoreReward) -> pd.DataFrame:
    """Per held-out source: the scorer's readings and reward on the 8-bit image (as eval.py scores saved
    files), the utility and PSNR to the clean reference."""
    images = eight_bit(images.detach()).cpu()
    results = reward.scorer.score(
        [_pil(image) for image in images],
        [_pil(image) for image in sources.degraded],
        batch_size=reward.batch_size,
    )
    values = reward.combine(torch.from_numpy(results.score), torch.from_numpy(results.p_hallucination))
    rows = []
    for i, source_id in enumerate(sources.ids):
        image, clean, degraded, agreed = (
            x.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
            for x in (images[i], sources.clean[i], sources.degraded[i], sources.agreed[i])
        )
        rows.append(
            {
                "source_id": source_id,
                "reward": float(values[i]),
                "llscore": float(results.score[i]),
                "p_hallucination": float(results.p_hallucination[i]),
                "utility": utility(image, degraded, agreed),
                "psnr": _psnr(clean, image),
            }
        )
    return pd.DataFrame(rows)


def hacking_verdicts(per_image: pd.DataFrame, baseline: str, variants: list[str]) -> dict[str, dict]:
    """Per fine-tuned variant, paired by source against `baseline`: mean reward and utility changes, the share of
    sources whose reward rose while their utility fell, and the flag: mean reward up, mean utility down."""
    before = per_image[per_image["output"] == baseline].set_index("source_id")
    verdicts = {}
    for name in variants:
        after = per_image[per_image["output"] == name].set_index("source_id").loc[before.index]
        d_reward, d_utility = after["reward"] - before["reward"], after["utility"] - before["utility"]
        verdicts[name] = {
            "reward_change": float(d_reward.mean()),
            "utility_change": float(d_utility.mean()),
            "share_reward_up_utility_down": float(((d_reward > 0) & (d_utility < 0)).mean()),
            "reward_hacking": bool(d_reward.mean() > 0 and d_utility.mean() < 0),
        }
    return verdicts
