"""Time llscore.metrics at LL-Bench scale: 28,919 restorations of 2,469 sources, 152,020 preference pairs.

python bench/bench_metrics.py [--repeats 5] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llscore import metrics as M

N_IMAGES, N_SOURCES, N_PAIRS, N_MODELS = 28_919, 2_469, 152_020, 31


def make_data(seed: int = 0) -> dict:
    """Synthetic LL-Bench-sized data: hidden utility, noisy human / evaluator scores, Bradley-Terry votes."""
    rng = np.random.default_rng(seed)
    source = np.sort(rng.integers(0, N_SOURCES, N_IMAGES))
    model = rng.integers(0, N_MODELS, N_IMAGES)
    utility = rng.normal(size=N_IMAGES) + 0.5 * rng.normal(size=N_MODELS)[model]
    human = utility + rng.normal(0, 0.3, N_IMAGES)
    pred = 1 + 4 / (1 + np.exp(-(utility + rng.normal(0, 0.5, N_IMAGES))))  # in [1, 5], non-linear
    # pairs inside a source: a random partner among the items of the same source
    order = np.argsort(source, kind="stable")
    start = np.searchsorted(source[order], source)
    size = np.bincount(source, minlength=N_SOURCES)[source]
    ia = rng.integers(0, N_IMAGES, N_PAIRS)
    ib = order[start[ia] + rng.integers(0, size[ia])]
    n_votes = rng.integers(1, 6, N_PAIRS)
    p_a = 1 / (1 + np.exp(-(utility[ia] - utility[ib]) * 2))
    p_tie = 0.15
    n_tie = rng.binomial(n_votes, p_tie)
    n_a = rng.binomial(n_votes - n_tie, p_a)
    n_b = n_votes - n_tie - n_a
    hall_label = rng.binomial(3, 1 / (1 + np.exp(2 * utility))) / 3
    hall_prob = np.clip(hall_label + rng.normal(0, 0.25, N_IMAGES), 0, 1)
    return dict(
        source=source,
        model=model,
        human=human,
        pred=pred,
        score_a=pred[ia],
        score_b=pred[ib],
        n_a=n_a,
        n_b=n_b,
        n_tie=n_tie,
        p_a=(n_a + 0.5 * n_tie) / n_votes,
        majority=M.majority_label(n_a, n_b, n_tie),
        vote_pair=np.repeat(np.arange(N_PAIRS), n_votes),
        votes=np.repeat(np.tile(["a", "b", "tie"], N_PAIRS), np.column_stack([n_a, n_b, n_tie]).ravel()),
        hall_label=hall_label,
        hall_prob=hall_prob,
    )


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    d = make_data()
    print(f"{N_IMAGES:,} images, {N_SOURCES:,} sources, {N_PAIRS:,} pairs, {d['votes'].size:,} votes")
    cases = [
        ("vote_counts (long -> counts)", lambda: M.vote_counts(d["vote_pair"], d["votes"])[1].sum()),
        (
            "pairwise_accuracy",
            lambda: M.pairwise_accuracy(d["score_a"], d["score_b"], d["majority"])["accuracy"],
        ),
        ("vote_agreement", lambda: M.vote_agreement(d["score_a"], d["score_b"], d["p_a"])),
        ("human_ceiling", lambda: M.human_ceiling(d["n_a"], d["n_b"], d["n_tie"])["loo_agreement"]),
        ("srcc", lambda: M.srcc(d["pred"], d["human"])),
        ("plcc", lambda: M.plcc(d["pred"], d["human"])),
        ("krcc", lambda: M.krcc(d["pred"], d["human"])),
        ("plcc_logistic", lambda: M.plcc_logistic(d["pred"], d["human"]).plcc),
        ("within_source_srcc", lambda: M.within_source_srcc(d["pred"], d["human"], d["source"])[0]),
        (
            "evaluate_scores (all above)",
            lambda: M.evaluate_scores(d["pred"], d["human"], d["source"])["srcc"],
        ),
        ("hallucination_metrics", lambda: M.hallucination_metrics(d["hall_prob"], d["hall_label"])["auroc"]),
        (
            "leaderboard (31 models)",
            lambda: M.leaderboard({"s": d["pred"]}, d["model"], d["human"])["kendall_tau"]["s"],
        ),
    ]
    rows = [(name, *timed(fn, args.repeats)) for name, fn in cases]
    t, ci = timed(lambda: M.bootstrap_ci(M.srcc, d["source"], d["pred"], d["human"], n_boot=args.n_boot), 1)
    rows.append((f"bootstrap_ci(srcc, n_boot={args.n_boot})", t, f"[{ci[0]:.4f}, {ci[1]:.4f}]"))
    t, _ = timed(lambda: M.bootstrap_ci(lambda x: 0.0, d["source"], d["pred"], n_boot=args.n_boot), 1)
    rows.append(("  of which resampling indices", t, "-"))
    pair_total = sum(r[1] for r in rows[1:4])
    print(f"\n{'metric':<40} {'time (ms)':>10}  value")
    print("-" * 64)
    for name, sec, value in rows:
        shown = value if isinstance(value, str) else f"{float(value):.4f}"
        print(f"{name:<40} {1e3 * sec:>10.1f}  {shown}")
    print("-" * 64)
    print(f"{'pairwise + vote + ceiling':<40} {1e3 * pair_total:>10.1f}")


if __name__ == "__main__":
    main()
