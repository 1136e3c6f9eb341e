"""Simulated human annotators: noisy Bradley–Terry judges of the hidden utility, with ties and missed calls.

Each annotator has their own perceptual noise, their own threshold below which two restorations look equally
good, and their own ability to spot hallucinations (and rate of false alarms), so the votes disagree the way
expert panels do and the fitted scores carry real uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass(frozen=True)
class Annotator:
    annotator_id: str
    noise: float  # logistic scale of their perception of a utility difference
    tie_margin: float  # perceived differences smaller than this are called a tie
    detection: float  # probability of spotting a conspicuous hallucination
    false_alarm: float  # probability of flagging a faithful restoration


def annotator_pool(rng: np.random.Generator, n: int = 16) -> tuple[Annotator, ...]:
    return tuple(
        Annotator(
            f"ann{k:02d}",
            noise=0.12 * rng.lognormal(0.0, 0.35),
            tie_margin=rng.uniform(0.01, 0.04),
            detection=rng.uniform(0.65, 0.95),
            false_alarm=rng.uniform(0.01, 0.06),
        )
        for k in range(n)
    )


@dataclass(frozen=True)
class Trial:
    pairs: list[tuple[int, int, str]]  # (index a, index b, "a" / "b" / "tie") in presentation order
    ranking: np.ndarray  # indices, best first
    flags: np.ndarray  # bool per image: "this restoration hallucinates"


def run_trial(
    annotator: Annotator,
    utility: np.ndarray,
    hallucinated: np.ndarray,
    hallucinated_area: np.ndarray,
    rng: np.random.Generator,
) -> Trial:
    """One annotator judges every pair of restorations of one source, then ranks and flags them.

    A pair is won with Bradley–Terry probability sigmoid((u_a - u_b) / noise) (logistic perception noise)
    unless the perceived difference falls inside the annotator's tie margin. The ranking follows the trial's
    own wins (ties half), broken by a fresh noisy look. A hallucination is spotted more often when it is larger.
    """
    n = utility.size
    pairs = [pair if rng.random() < 0.5 else pair[::-1] for pair in combinations(range(n), 2)]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]
    a, b = np.array(pairs).T
    perceived = utility[a] - utility[b] + annotator.noise * rng.logistic(size=a.size)
    preference = np.where(np.abs(perceived) < annotator.tie_margin, "tie", np.where(perceived > 0, "a", "b"))
    wins = np.zeros(n)
    np.add.at(wins, a, (preference == "a") + 0.5 * (preference == "tie"))
    np.add.at(wins, b, (preference == "b") + 0.5 * (preference == "tie"))
    glance = utility + annotator.noise * rng.logistic(size=n)
    ranking = np.lexsort((-glance, -wins))
    spot = np.where(
        hallucinated,
        annotator.detection * np.minimum(1.0, 0.6 + 3.0 * hallucinated_area),
        annotator.false_alarm,
    )
    return Trial(
        list(zip(a.tolist(), b.tolist(), preference.tolist(), strict=True)), ranking, rng.random(n) < spot
    )
