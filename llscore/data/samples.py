"""Training/evaluation samples from a validated bench: quality, pair and hallucination rows.

Quality scores are mapped linearly onto the prompt contract's score range ([1, 5]); `Normalisation` records
the map so that any score can be taken back to the release's own scale. Image paths are absolute: a prepared
dataset points into the bench it was built from and must be rebuilt if that bench moves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from llscore import metrics
from llscore.data.tables import Bench
from llscore.errors import DataError
from llscore.prompts import PromptContract


@dataclass(frozen=True)
class Normalisation:
    """Linear min-max map of raw scores onto [out_lo, out_hi]: y = out_lo + (out_hi - out_lo) * (x - lo) / (hi - lo).

    lo and hi are the lowest and highest raw score among the quality samples, so the map is invertible and
    preserves order; stds scale by the same factor (out_hi - out_lo) / (hi - lo).
    """

    lo: float
    hi: float
    out_lo: float = 1.0
    out_hi: float = 5.0
    method: str = "linear min-max"

    @property
    def factor(self) -> float:
        return (self.out_hi - self.out_lo) / (self.hi - self.lo)

    def from_raw(self, score):
        return self.out_lo + (np.asarray(score, dtype=float) - self.lo) * self.factor

    def std_from_raw(self, std):
        return np.asarray(std, dtype=float) * self.factor

    def to_dict(self) -> dict:
        return {**asdict(self), "formula": "score = out_lo + (out_hi - out_lo) * (raw - lo) / (hi - lo)"}

    @classmethod
    def from_dict(cls, data: dict) -> Normalisation:
        """Read back `to_dict` output (or normalisation.json, whose extra keys describe the soft targets)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def fit(cls, raw: pd.Series, contract: PromptContract, file: str) -> Normalisation:
        if raw.empty:
            raise DataError("no usable quality scores for restored images", file=file)
        lo, hi = float(raw.min()), float(raw.max())
        if hi <= lo:
            raise DataError(f"all quality scores equal {lo}; they cannot be normalised", file=file)
        out_lo, out_hi = contract.score_range
        return cls(lo, hi, out_lo, out_hi)


def soft_targets(scores, stds, weights) -> np.ndarray:
    """Discretised Gaussian over the levels whose mean is exactly each score; rows ordered like `weights`.

    p_k is proportional to exp(-(w_k - c)^2 / (2 std^2)) at each level weight w_k. Centred at the score
    itself (c = score) the mean is pulled towards the middle level; DeQA-Score corrects that with a linear
    (alpha, beta) rescaling that can go negative and then falls back to a two-point target. Here the centre c
    is shifted instead: p is an exponential family in c, so its mean rises strictly from min(w) to max(w) as c
    goes from -inf to +inf and exactly one c gives mean = score. It is found by vectorised bisection and the
    result is never negative. Scores at the ends of the range get all mass on the end level.
    """
    w = np.asarray(weights, dtype=float)
    score = np.asarray(scores, dtype=float)[:, None]
    std = np.asarray(stds, dtype=float)[:, None]

    def dist(c):
        logits = -((w - c) ** 2) / (2 * std**2)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    # Far enough out that neighbouring levels differ by > 40 in logit, so the mean is the end level to ~1e-17.
    reach = 40 * std**2 + (w.max() - w.min())
    lo, hi = np.broadcast_to(w.min() - reach, score.shape), np.broadcast_to(w.max() + reach, score.shape)
    for _ in range(100):
        mid = (lo + hi) / 2
        below = dist(mid) @ w < score[:, 0]
        lo, hi = np.where(below[:, None], mid, lo), np.where(below[:, None], hi, mid)
    p = dist((lo + hi) / 2)
    for end in (w.min(), w.max()):
        p[score[:, 0] == end] = w == end
    return p


def quality_samples(
    bench: Bench, contract: PromptContract, min_std: float, default_std: float, scores_file: str
) -> tuple[pd.DataFrame, Normalisation]:
    """One row per scored restoration; scores of degraded/reference images are left out (counted in the report).

    `reference` is the source's clean image where the bench has one (`kind=reference`), else "".
    """
    restored = bench.images[bench.images.kind == "restored"]
    references = bench.images[bench.images.kind == "reference"].drop_duplicates("source_id")
    reference = references.set_index("source_id").path
    df = bench.scores.merge(restored, on="image_id", how="inner")
    norm = Normalisation.fit(df.score, contract, scores_file)
    score = np.clip(norm.from_raw(df.score), norm.out_lo, norm.out_hi)  # only rounding at the ends is clipped
    std = np.where(np.isnan(df["std"]), default_std, norm.std_from_raw(df["std"]))
    soft = soft_targets(score, np.maximum(std, min_std), contract.level_weights)
    out = pd.DataFrame(
        {
            "image_id": df.image_id,
            "source_id": df.source_id,
            "degraded": df.source_id.map(bench.sources.degraded),
            "restored": df.path,
            "reference": df.source_id.map(reference).fillna(""),
            "score": score,
            "std": std,
            "soft_target": list(soft),
            "task": df.task,
            "model": df.model,
            "model_family": df.model_family,
        }
    )
    return out, norm


def pair_samples(bench: Bench) -> pd.DataFrame:
    """One row per unordered pair of restorations, aggregating every vote on it in either order.

    A and B keep the order of the pair's first row in the table. p_a_better = (votes for A + tie votes / 2) /
    all votes; majority is the plurality label of the votes (`llscore.metrics.majority_label`).
    """
    v = bench.pairs
    swap = v.image_b < v.image_a
    first_a = v.image_a.groupby(
        [v.image_b.where(swap, v.image_a), v.image_a.where(swap, v.image_b)]
    ).transform("first")
    same = v.image_a == first_a
    a = np.where(same, v.image_a, v.image_b)
    b = np.where(same, v.image_b, v.image_a)
    pref = v.preference
    votes = pd.DataFrame(
        {
            "source_id": v.source_id,
            "image_a": a,
            "image_b": b,
            "votes_a": ((pref == "a") & same) | ((pref == "b") & ~same),
            "votes_b": ((pref == "b") & same) | ((pref == "a") & ~same),
            "votes_tie": pref == "tie",
        }
    )
    df = votes.groupby(["source_id", "image_a", "image_b"], sort=False).sum().astype(int).reset_index()
    n = df.votes_a + df.votes_b + df.votes_tie
    p = (df.votes_a + 0.5 * df.votes_tie) / n
    path = bench.images.set_index("image_id").path
    return pd.DataFrame(
        {
            "source_id": df.source_id,
            "task": df.source_id.map(bench.sources.task),
            "degraded": df.source_id.map(bench.sources.degraded),
            "image_a": df.image_a,
            "image_b": df.image_b,
            "restored_a": df.image_a.map(path),
            "restored_b": df.image_b.map(path),
            "p_a_better": p,
            "n_votes": n,
            "majority": metrics.majority_label(df.votes_a, df.votes_b, df.votes_tie),
            "votes_a": df.votes_a,
            "votes_b": df.votes_b,
            "votes_tie": df.votes_tie,
        }
    )


def hallucination_samples(bench: Bench) -> pd.DataFrame:
    """One row per labelled restoration: label = vote-weighted mean of its rows (0/1 votes or fractions)."""
    df = bench.hallucination.merge(bench.images, on="image_id", how="inner")
    return pd.DataFrame(
        {
            "image_id": df.image_id,
            "source_id": df.source_id,
            "task": df.task,
            "model": df.model,
            "model_family": df.model_family,
            "degraded": df.source_id.map(bench.sources.degraded),
            "restored": df.path,
            "label": df.label.astype(float),
            "n_votes": df.n_votes.astype(int),
        }
    )
