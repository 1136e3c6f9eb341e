"""The trivial rivals an evaluator of restorations must beat (docs/evaluation.md).

An evaluator can agree with people without judging the image: people tend to prefer outputs that moved further
from the degraded input, and some restoration models are simply better than others. Two scores that know only
that are reported beside LL-Score, so a reader sees what its numbers are worth:

- **restoration strength**: how far the output moved from its input (RMSE in 0–1 pixel units, the input resized
  to the output's size when they differ); more change = higher. The same number, read as a hallucination
  probability, is the "distance from the input" detector of hallucinations.
- **restorer prior**: the mean human score of the restoration model that made the output, over the *training*
  split; a model the training split never saw gets the training split's overall mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from llscore.images import read_image

RESTORATION_STRENGTH = "restoration_strength"
RESTORER_PRIOR = "restorer_prior"
RIVALS = (RESTORATION_STRENGTH, RESTORER_PRIOR)


def restoration_strength(restored: list[str], degraded: list[str], progress: bool = True) -> np.ndarray:
    """RMSE between each restored image and its degraded input (0–1 pixel units)."""
    out = np.empty(len(restored))
    pairs = zip(restored, degraded, strict=True)
    for k, (output, source) in enumerate(
        tqdm(pairs, total=len(out), desc="restoration strength", disable=not progress)
    ):
        after = read_image(output)
        before = read_image(source)
        if before.size != after.size:
            before = before.resize(after.size, Image.Resampling.BICUBIC)
        difference = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
        out[k] = np.sqrt(np.mean(difference**2)) / 255.0
    return out


def restorer_prior(train: pd.DataFrame, models: pd.Series) -> np.ndarray:
    """Each model's mean human score on the training split (`train`: columns model, score); unseen models get
    the training split's mean."""
    means = train.groupby("model")["score"].mean()
    return models.map(means).fillna(train["score"].mean()).to_numpy(dtype=float)
