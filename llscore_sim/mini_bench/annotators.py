"""Simulated human annotators: noisy Bradley–Terry judges of what they perceive, with ties and missed calls.

An annotator sees the degraded input and every restoration of it (`perception.perceive`), flags the ones they
believe hallucinate (a hallucination is spotted more often the more visible it is; a faithful image is flagged
at the annotator's false-alarm rate), rates a flagged image lower, and then judges every pair. Each annotator
has their own perceptual noise, tie threshold, detection ability and false-alarm rate, so the votes disagree
the way expert panels do and the fitted scores carry real uncertainty. The clean scene is never an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .perception import Perception


@dataclass(frozen=True)
class Annotator:
    annotator_id: str
    noise: float  # logistic scale of their perception of a utility difference
    tie_margin: float  # perceived differences smaller than this are called a tie
    detection: float  # their ability to spot a hallucination (the ceiling of the spot probability)
    false_alarm: float  # probability of flagging a faithful restoration

    def flag_probability(self, perception: Perception) -> float:
        """P(this annotator flags the restoration as hallucinated): spotted, or a false alarm."""
        spotted = perception.spot_probability(self.detection) if perception.hallucination_area else 0.0
        return 1.0 - (1.0 - spotted) * (1.0 - self.false_alarm)

    def expected_utility(self, perception: Perception) -> float:
        """The utility this annotator perceives on average over their flagging."""
        return perception.base_utility - self.flag_probability(perception) * perception.hallucination_penalty


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


def expected_utility(perceptions: Sequence[Perception], pool: Sequence[Annotator]) -> np.ndarray:
    """What the annotator pool perceives on average, per restoration: LL-Bench-mini's ground-truth utility."""
    return np.array([np.mean([a.expected_utility(p) for a in pool]) for p in perceptions])


@dataclass(frozen=True)
class Trial:
    pairs: list[tuple[int, int, str]]  # (index a, index b, "a" / "b" / "tie") in presentation order
    ranking: np.ndarray  # indices, best first
    flags: np.ndarray  # bool per image: "this restoration hallucinates"
    perceived: np.ndarray  # utility per image after this annotator's flags (before perceptual noise)


def run_trial(annotator: Annotator, perceptions: Sequence[Perception], rng: np.random.Generator) -> Trial:
    """One annotator looks at every restoration of one source, flags, judges every pair, then ranks them.

    A flagged image is rated `hallucination_penalty` lower. A pair is won with Bradley–Terry probability
    sigmoid((u_a - u_b) / noise) (logistic perception noise) unless the perceived difference falls inside the
    annotator's tie margin. The ranking follows the trial's own wins (ties half), broken by a fresh noisy look.
    """
    n = len(perceptions)
    flags = rng.random(n) < np.array([annotator.flag_probability(p) for p in perceptions])
    penalty = np.array([p.hallucination_penalty for p in perceptions])
    perceived = np.array([p.base_utility for p in perceptions]) - flags * penalty
    pairs = [pair if rng.random() < 0.5 else pair[::-1] for pair in combinations(range(n), 2)]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]
    a, b = np.array(pairs).T
    seen = perceived[a] - perceived[b] + annotator.noise * rng.logistic(size=a.size)
    preference = np.where(np.abs(seen) < annotator.tie_margin, "tie", np.where(seen > 0, "a", "b"))
    wins = np.zeros(n)
    np.add.at(wins, a, (preference == "a") + 0.5 * (preference == "tie"))
    np.add.at(wins, b, (preference == "b") + 0.5 * (preference == "tie"))
    glance = perceived + annotator.noise * rng.logistic(size=n)
    ranking = np.lexsort((-glance, -wins))
    return Trial(
        list(zip(a.tolist(), b.tolist(), preference.tolist(), strict=True)), ranking, flags, perceived
    )
