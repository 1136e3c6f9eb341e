"""Metrics of the evaluation protocol (docs/evaluation.md): correlations, pairwise agreement, hallucination
detection and calibration, restoration-model leaderboard, and bootstrap intervals over source images.

Pure numpy / scipy / scikit-learn, so eval.py, in-training validation and baselines share one implementation.
Conventions: bad input (unequal lengths, NaN/inf, unknown labels) raises `ValueError` naming the argument;
an undefined metric (constant input, one class, too few items) returns NaN and emits a `MetricWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats
from sklearn import metrics as skm

PAIR_LABELS = ("a", "b", "tie")


class MetricWarning(RuntimeWarning):
    """A metric is undefined for this input and was returned as NaN (or a fit failed)."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


def _vector(x, name: str, n: int | None = None) -> np.ndarray:
    """1-D finite float array; the error names the argument and the first bad position."""
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} items, expected {n}")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s), first at index {i}: {a[i]}")
    return a


def _pair(pred, human) -> tuple[np.ndarray, np.ndarray]:
    p = _vector(pred, "pred")
    h = _vector(human, "human", p.size)
    if p.size == 0:
        raise ValueError("pred and human are empty")
    return p, h


def _constant(p: np.ndarray, h: np.ndarray, metric: str) -> bool:
    """True (after warning) when a correlation is undefined because one side has no variance."""
    for a, name in ((p, "pred"), (h, "human")):
        if a.size < 2 or np.all(a == a[0]):
            _warn(f"{metric} is undefined: {name} is constant over {a.size} item(s); returning NaN")
            return True
    return False


# ----------------------------------------------------------------------------------------------------------
# Correlations


def srcc(pred, human) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    p, h = _pair(pred, human)
    return np.nan if _constant(p, h, "SRCC") else float(stats.spearmanr(p, h).statistic)


def plcc(pred, human) -> float:
    """Pearson linear correlation on the raw scores (no fitted mapping)."""
    p, h = _pair(pred, human)
    return np.nan if _constant(p, h, "PLCC") else float(stats.pearsonr(p, h).statistic)


def krcc(pred, human) -> float:
    """Kendall rank correlation, tau-b (tie-corrected)."""
    p, h = _pair(pred, human)
    return np.nan if _constant(p, h, "KRCC") else float(stats.kendalltau(p, h).statistic)


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2, overflow-free via expit."""
    return b2 + (b1 - b2) * special.expit((np.asarray(x) - b3) / (np.abs(b4) + np.finfo(float).tiny))


@dataclass
class LogisticFit:
    """PLCC after the 4-parameter logistic mapping; `params` are (b1, b2, b3, b4) in the units of pred."""

    plcc: float
    params: tuple[float, float, float, float] | None
    converged: bool
    message: str = ""


def plcc_logistic(pred, human, tol: float = 1e-6, maxfev: int = 20000) -> LogisticFit:
    """PLCC between human and the 4-parameter logistic of pred fitted to human (the standard IQA protocol).

    The fit runs on standardised pred (better conditioned) and the parameters are converted back. Starts are
    tried in turn until one reaches at least the raw |PLCC| (the logistic family contains the linear map in
    its limit, so a fit below that is a poor local optimum); otherwise the best fit found is kept. tol (LM
    ftol/xtol) moves the PLCC by < 1e-4 but stops the slow drift when the optimum is the linear limit at
    infinity. If every start fails, the result says so (converged=False, plcc NaN, message) with a
    MetricWarning: a failed fit is never replaced silently by the raw PLCC. Four parameters need at least four
    items: fewer is NaN with a MetricWarning (a group of three images, say).
    """
    p, h = _pair(pred, human)
    if p.size < 4:
        message = f"the 4-parameter logistic needs at least 4 items, got {p.size}"
        _warn(f"logistic PLCC is undefined: {message}; returning NaN")
        return LogisticFit(np.nan, None, False, message)
    if _constant(p, h, "logistic PLCC"):
        return LogisticFit(np.nan, None, False, "constant input")
    mu, sd = p.mean(), p.std()
    z = (p - mu) / sd
    raw = abs(float(stats.pearsonr(z, h).statistic))
    hi, lo = h.max(), h.min()
    if stats.spearmanr(z, h).statistic < 0:  # decreasing relation: start with the asymptotes swapped
        hi, lo = lo, hi
    m = float(np.median(z))
    starts = [(hi, lo, m, 1.0), (hi, lo, m, 0.3), (hi, lo, m, 3.0), (lo, hi, m, 1.0)]
    best, best_r, errors = None, -np.inf, []
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                params, _ = optimize.curve_fit(logistic4, z, h, p0=p0, maxfev=maxfev, ftol=tol, xtol=tol)
        except (RuntimeError, ValueError) as err:
            errors.append(f"start {p0}: {err}")
            continue
        fitted = logistic4(z, *params)
        if not np.all(np.isfinite(fitted)) or np.ptp(fitted) <= 1e-12 * max(1.0, np.abs(fitted).max()):
            errors.append(f"start {p0}: collapsed to a constant mapping")
            continue
        r = float(stats.pearsonr(fitted, h).statistic)
        if r > best_r:
            best, best_r = params, r
        if r >= raw - 1e-3:
            break
    if best is None:
        message = "logistic fit failed from every start: " + "; ".join(errors)
        _warn(message)
        return LogisticFit(np.nan, None, False, message)
    b1, b2, b3, b4 = (float(v) for v in best)
    return LogisticFit(best_r, (b1, b2, float(mu + sd * b3), float(sd * abs(b4))), True, "ok")


def _group_codes(groups, n: int, name: str = "source_ids") -> tuple[np.ndarray, int]:
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != n:
        raise ValueError(f"{name} must be 1-D with {n} items, got shape {g.shape}")
    _, codes = np.unique(g, return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1 if n else 0


def _ranks_within(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of x inside each group, for all groups at once."""
    dense = stats.rankdata(x, method="dense").astype(np.int64)  # 1..K, ties share a value
    key = codes.astype(np.int64) * (int(dense.max()) + 1) + dense  # groups contiguous, ties kept
    offset = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=n_groups))[:-1]))
    return stats.rankdata(key, method="average") - offset[codes]


def within_source_srcc(pred, human, source_ids) -> tuple[float, int]:
    """SRCC inside each source image, averaged over sources: (mean, number of sources used).

    It isolates the question restoration users ask (which output of *this* input is better) from
    between-source difficulty. Sources with fewer than 3 items or a constant pred/human are skipped (the
    count says how many were used). Vectorised: per-group ranks, then per-group Pearson via bincount.
    """
    p, h = _pair(pred, human)
    codes, g = _group_codes(source_ids, p.size)
    rp, rh = _ranks_within(p, codes, g), _ranks_within(h, codes, g)
    n = np.bincount(codes, minlength=g).astype(float)
    dp = rp - (np.bincount(codes, rp, g) / n)[codes]
    dh = rh - (np.bincount(codes, rh, g) / n)[codes]
    sxy, sxx, syy = (np.bincount(codes, w, g) for w in (dp * dh, dp * dp, dh * dh))
    ok = (n >= 3) & (sxx > 1e-12) & (syy > 1e-12)
    if not ok.any():
        _warn("within-source SRCC is undefined: no source has >= 3 items with non-constant values")
        return np.nan, 0
    r = sxy[ok] / np.sqrt(sxx[ok] * syy[ok])
    return float(np.clip(r, -1, 1).mean()), int(ok.sum())


def evaluate_scores(pred, human, source_ids) -> dict[str, float | int | bool]:
    """The correlation suite for one prediction vector (overall, or one task / model family subset).

    Keys: srcc, plcc, plcc_logistic, krcc, within_source_srcc, n, plus n_sources (sources used by the
    within-source mean) and logistic_converged (False means plcc_logistic is NaN because the fit failed).
    """
    p, h = _pair(pred, human)
    fit = plcc_logistic(p, h)
    ws, n_sources = within_source_srcc(p, h, source_ids)
    return {
        "srcc": srcc(p, h),
        "plcc": plcc(p, h),
        "plcc_logistic": fit.plcc,
        "krcc": krcc(p, h),
        "within_source_srcc": ws,
        "n": int(p.size),
        "n_sources": n_sources,
        "logistic_converged": fit.converged,
    }


# ----------------------------------------------------------------------------------------------------------
# Pairwise preferences


def _labels(majority, n: int) -> np.ndarray:
    m = np.asarray(majority).astype(str)
    if m.ndim != 1 or m.size != n:
        raise ValueError(f"majority must be 1-D with {n} items, got shape {m.shape}")
    bad = ~np.isin(m, PAIR_LABELS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"majority must hold {PAIR_LABELS}; index {i} is {str(m[i])!r} ({int(bad.sum())} bad)"
        )
    return m


def majority_label(n_a, n_b, n_tie) -> np.ndarray:
    """Plurality label per pair from vote counts; a draw for the top count (or no votes) gives 'tie'."""
    a, b, t = (np.asarray(v, dtype=np.int64) for v in (n_a, n_b, n_tie))
    return np.where((a > b) & (a > t), "a", np.where((b > a) & (b > t), "b", "tie"))


def vote_counts(pair_ids, votes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Long format (one row per vote, as in pairwise_quality_preferences.csv) -> (pairs, n_a, n_b, n_tie)."""
    pair_ids = np.asarray(pair_ids)
    v = _labels(votes, pair_ids.size)
    pairs, inv = np.unique(pair_ids, return_inverse=True)
    inv = inv.ravel()
    counts = [
        np.bincount(inv, weights=v == lab, minlength=pairs.size).astype(np.int64) for lab in PAIR_LABELS
    ]
    return pairs, *counts


def pairwise_accuracy(score_a, score_b, majority, tie_tol: float | None = None) -> dict[str, float | int]:
    """Agreement of the evaluator's preference with the human majority per pair.

    accuracy: over pairs whose majority is 'a' or 'b' (n_pairs - n_ties of them); the evaluator prefers the
    higher score, and an exact score tie counts 0.5. Tie pairs are not dropped silently: n_ties counts them
    and tie_agreement is the fraction of them whose |score_a - score_b| <= tie_tol. tie_tol=None makes the
    rule scale-free (so pyiqa baselines on other scales compare fairly): the quantile of |score_a - score_b|
    over all pairs at the human tie rate, i.e. the evaluator calls as many ties as the humans did.
    """
    a = _vector(score_a, "score_a")
    b = _vector(score_b, "score_b", a.size)
    m = _labels(majority, a.size)
    diff = a - b
    decided = m != "tie"
    n_ties = int((~decided).sum())
    if decided.any():
        sign = np.where(m[decided] == "a", 1.0, -1.0) * np.sign(diff[decided])
        accuracy = float(np.mean((sign + 1.0) / 2.0))  # agree 1, exact score tie 0.5, disagree 0
    else:
        _warn("pairwise accuracy is undefined: every pair has a tie majority")
        accuracy = np.nan
    if tie_tol is None:
        tie_tol = float(np.quantile(np.abs(diff), n_ties / a.size)) if n_ties else 0.0
    tie_agreement = float(np.mean(np.abs(diff[~decided]) <= tie_tol)) if n_ties else np.nan
    return {
        "accuracy": accuracy,
        "n_pairs": int(a.size),
        "n_ties": n_ties,
        "tie_agreement": tie_agreement,
        "tie_tol": float(tie_tol),
    }


def vote_agreement(score_a, score_b, p_a_better, weights=None) -> float:
    """Expected agreement with one random human vote: P(a) if the evaluator prefers a, 1 - P(a) if b, 0.5 on
    an exact score tie. p_a_better is the vote fraction for 'a' with tie votes counted as 0.5; weights (e.g.
    votes per pair) make it the mean over individual votes rather than over pairs.
    """
    a = _vector(score_a, "score_a")
    b = _vector(score_b, "score_b", a.size)
    p = _vector(p_a_better, "p_a_better", a.size)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p_a_better must lie in [0, 1]")
    s = np.sign(a - b)
    agree = np.where(s > 0, p, np.where(s < 0, 1.0 - p, 0.5))
    w = None if weights is None else _vector(weights, "weights", a.size)
    return float(np.average(agree, weights=w))


def human_ceiling(n_a, n_b, n_tie) -> dict[str, float | int]:
    """Human-human agreement, the ceiling for `pairwise_accuracy` and `vote_agreement`.

    loo_agreement: each vote is held out in turn and scored against the plurality (`majority_label`) of the
    *other* votes of its pair, exactly as the evaluator is scored against the majority: 1 if it matches,
    0.5 if the held-out vote is 'tie', 0 if it is the opposite side. Held-out votes whose leave-one-out
    majority is 'tie' are skipped (like tie pairs in pairwise_accuracy). Averaged within each pair, then over
    the n_pairs pairs that have >= 2 votes and at least one scored vote. It is slightly pessimistic (the
    reference is one vote smaller), the usual price of a leave-one-out ceiling.
    vote_agreement_bound: mean over pairs with >= 1 vote of max(P(a), 1 - P(a)), the best any evaluator can
    reach on `vote_agreement` (ties as 0.5).
    Counts come from `vote_counts`; everything is array arithmetic, so 152k pairs take milliseconds.
    """
    a = np.asarray(n_a, dtype=np.int64)
    b = np.asarray(n_b, dtype=np.int64)
    t = np.asarray(n_tie, dtype=np.int64)
    if not (a.shape == b.shape == t.shape) or a.ndim != 1:
        raise ValueError(f"n_a, n_b, n_tie must be 1-D of equal length, got {a.shape}, {b.shape}, {t.shape}")
    if np.any((a < 0) | (b < 0) | (t < 0)):
        raise ValueError("vote counts must be non-negative")
    total = a + b + t
    score = np.zeros(a.shape)
    scored = np.zeros(a.shape)
    # held-out vote of each kind: (how many such votes, counts of the others, its value against 'a'/'b')
    for k, others, if_a, if_b in (
        (a, (a - 1, b, t), 1.0, 0.0),
        (b, (a, b - 1, t), 0.0, 1.0),
        (t, (a, b, t - 1), 0.5, 0.5),
    ):
        m = majority_label(*others)
        use = (k > 0) & (total >= 2) & (m != "tie")
        score += np.where(use, k * np.where(m == "a", if_a, if_b), 0.0)
        scored += np.where(use, k, 0)
    ok = scored > 0
    if ok.any():
        loo = float(np.mean(score[ok] / scored[ok]))
    else:
        _warn("human ceiling is undefined: no pair has >= 2 votes with a decided leave-one-out majority")
        loo = np.nan
    voted = total > 0
    p_a = (a[voted] + 0.5 * t[voted]) / total[voted]
    bound = float(np.mean(np.maximum(p_a, 1.0 - p_a))) if voted.any() else np.nan
    return {"loo_agreement": loo, "n_pairs": int(ok.sum()), "vote_agreement_bound": bound}


# ----------------------------------------------------------------------------------------------------------
# Hallucination


def hallucination_metrics(prob, label, threshold: float = 0.5, n_bins: int = 10) -> dict:
    """AUROC, average precision, F1 at `threshold`, and ECE of hallucination probabilities.

    label may be 0/1 or a vote fraction; it is binarised as positive when more than half of the votes say
    hallucination (label > 0.5). ECE = sum_bins (count / n) * |mean prob - positive rate| with n_bins
    equal-width bins on [0, 1]; `reliability` holds the bins for the plot (edges, and per bin mean_prob,
    frequency = observed positive rate, count; NaN means in empty bins). AUROC/AP are NaN (with a warning)
    when only one class is present; F1 is NaN when it is 0/0.
    """
    p = _vector(prob, "prob")
    y = _vector(label, "label", p.size)
    if p.size == 0:
        raise ValueError("prob and label are empty")
    if np.any((p < 0) | (p > 1)) or np.any((y < 0) | (y > 1)):
        raise ValueError("prob and label must lie in [0, 1]")
    y = (y > 0.5).astype(int)
    if 0 < y.sum() < y.size:
        auroc = float(skm.roc_auc_score(y, p))
        ap = float(skm.average_precision_score(y, p))
    else:
        _warn(f"AUROC/AP are undefined: all {y.size} labels are {'positive' if y.any() else 'negative'}")
        auroc = ap = np.nan
    f1 = float(skm.f1_score(y, (p >= threshold).astype(int), zero_division=np.nan))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)  # bin [k/n, (k+1)/n), with 1.0 in the last
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(idx, p, n_bins) / count
        frequency = np.bincount(idx, y, n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / p.size * np.abs(mean_prob[filled] - frequency[filled])))
    return {
        "auroc": auroc,
        "ap": ap,
        "f1": f1,
        "ece": ece,
        "n": int(p.size),
        "n_positive": int(y.sum()),
        "reliability": {
            "edges": edges.tolist(),
            "mean_prob": mean_prob.tolist(),
            "frequency": frequency.tolist(),
            "count": count.tolist(),
        },
    }


# ----------------------------------------------------------------------------------------------------------
# Leaderboard and bootstrap


def within_group_auroc(prob, label, groups) -> tuple[float, int]:
    """Hallucination AUROC inside each group (restoration model) that has both hallucinated and faithful outputs,
    averaged over those groups: (mean, number of groups used).

    It asks whether P(hallucination) separates a restorer's hallucinated outputs from its faithful ones, which
    an evaluator that only learned which restorers hallucinate cannot do. Labels are binarised as in
    `hallucination_metrics`; NaN (with a warning) when no group has both classes.
    """
    p = _vector(prob, "prob")
    y = _vector(label, "label", p.size) > 0.5
    codes, n_groups = _group_codes(groups, p.size, "groups")
    aurocs = [
        float(skm.roc_auc_score(y[codes == g], p[codes == g]))
        for g in range(n_groups)
        if 0 < y[codes == g].sum() < (codes == g).sum()
    ]
    if not aurocs:
        _warn("within-group AUROC is undefined: no group has both hallucinated and faithful outputs")
        return np.nan, 0
    return float(np.mean(aurocs)), len(aurocs)


def leaderboard(scores_by_name: Mapping[str, np.ndarray], models, human) -> dict:
    """Rank restoration models by mean score under each metric and by mean human score.

    Returns {"models": [...], "human": [mean per model], "means": {name: [mean per model]},
    "kendall_tau": {name: tau-b between that name's model ranking and the human one}} (JSON-ready lists).
    """
    h = _vector(human, "human")
    codes, g = _group_codes(models, h.size, "models")
    names = np.unique(np.asarray(models))
    n = np.bincount(codes, minlength=g)
    human_mean = np.bincount(codes, h, g) / n
    means, taus = {}, {}
    for name, scores in scores_by_name.items():
        s = _vector(scores, f"scores_by_name[{name!r}]", h.size)
        means[name] = np.bincount(codes, s, g) / n
        if _constant(means[name], human_mean, f"leaderboard Kendall tau for {name!r}"):
            taus[name] = np.nan
        else:
            taus[name] = float(stats.kendalltau(means[name], human_mean).statistic)
    return {
        "models": names.tolist(),
        "human": human_mean.tolist(),
        "means": {k: v.tolist() for k, v in means.items()},
        "kendall_tau": taus,
    }


def bootstrap_ci(
    metric_fn: Callable[..., float],
    groups,
    *arrays,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    with_groups: bool = False,
) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of metric_fn(*arrays) under a cluster bootstrap over `groups`.

    Source images (not items) are resampled with replacement, because restorations of one source are
    correlated; every item of a drawn source enters the replicate. with_groups=True also passes each
    replicate's group labels as the last argument (a duplicated source gets a fresh label, so e.g.
    within_source_srcc sees two sources, not one with repeated items). NaN replicates are ignored (with a
    warning that counts them); warnings inside replicates are silenced, errors are not. Deterministic for a seed.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one data array")
    arrs = [np.asarray(x) for x in arrays]
    n = arrs[0].shape[0]
    if any(x.shape[0] != n for x in arrs):
        raise ValueError(f"all arrays must have {n} items, got {[x.shape[0] for x in arrs]}")
    codes, g = _group_codes(groups, n, "groups")
    order = np.argsort(codes, kind="stable")  # items of group k are order[start[k]:start[k] + size[k]]
    size = np.bincount(codes, minlength=g)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    draws = np.random.default_rng(seed).integers(0, g, size=(n_boot, g))
    values = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r, d in enumerate(draws):
            lens = size[d]
            ends = np.cumsum(lens)
            # concatenated ranges start[d[j]] .. start[d[j]] + lens[j], without a Python loop
            pos = np.arange(ends[-1]) + np.repeat(start[d] - (ends - lens), lens)
            idx = order[pos]
            args = [x[idx] for x in arrs]
            if with_groups:
                args.append(np.repeat(np.arange(g), lens))
            values[r] = float(metric_fn(*args))
    finite = values[np.isfinite(values)]
    if finite.size < n_boot:
        _warn(f"bootstrap: {n_boot - finite.size} of {n_boot} replicates were NaN and were ignored")
    if finite.size == 0:
        return np.nan, np.nan
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
