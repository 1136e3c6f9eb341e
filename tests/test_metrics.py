"""llscore.metrics against scipy / scikit-learn and hand-worked cases."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from llscore import metrics as M

RNG = np.random.default_rng(0)


def sigmoid_relation(n=200):
    """Perfectly monotone, strongly non-linear: human is a steep logistic of pred."""
    x = np.linspace(-3, 3, n)
    return x, 1 + 4 / (1 + np.exp(-3 * x))


# ---------------------------------------------------------------------------------------------- correlations


def test_correlations_match_scipy_with_ties():
    pred = RNG.integers(0, 6, 300).astype(float)  # many rank ties
    human = pred + RNG.normal(0, 2, 300)
    assert M.srcc(pred, human) == pytest.approx(stats.spearmanr(pred, human).statistic, abs=1e-12)
    assert M.plcc(pred, human) == pytest.approx(stats.pearsonr(pred, human).statistic, abs=1e-12)
    assert M.krcc(pred, human) == pytest.approx(stats.kendalltau(pred, human).statistic, abs=1e-12)


def test_rank_ties_hand_case():
    # ranks of pred with ties: [1.5, 1.5, 3, 4]; human ranks [1, 2, 3, 4]
    pred, human = [1, 1, 2, 3], [1, 2, 3, 4]
    r = np.array([1.5, 1.5, 3, 4])
    assert M.srcc(pred, human) == pytest.approx(np.corrcoef(r, [1, 2, 3, 4])[0, 1])
    # tau-b: concordant 5, discordant 0, one tie in pred: 5 / sqrt(5 * 6)
    assert M.krcc(pred, human) == pytest.approx(5 / np.sqrt(30))


@pytest.mark.parametrize("fn", [M.srcc, M.plcc, M.krcc])
def test_constant_input_is_nan_with_warning(fn):
    with pytest.warns(M.MetricWarning, match="pred is constant"):
        assert np.isnan(fn(np.full(5, 3.0), np.arange(5.0)))
    with pytest.warns(M.MetricWarning, match="human is constant"):
        assert np.isnan(fn(np.arange(5.0), np.ones(5)))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="human has 3 items, expected 4"):
        M.srcc([1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match=r"pred has 1 non-finite.*index 2"):
        M.plcc([1, 2, np.nan, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="human has 1 non-finite"):
        M.krcc([1, 2, 3, 4], [1, np.inf, 3, 4])


def test_monotone_nonlinear_relation():
    pred, human = sigmoid_relation()
    assert M.srcc(pred, human) == pytest.approx(1.0)
    assert M.krcc(pred, human) == pytest.approx(1.0)
    raw = M.plcc(pred, human)
    fit = M.plcc_logistic(pred, human)
    assert raw < 0.99
    assert fit.converged and fit.message == "ok"
    assert fit.plcc > 0.999
    # the fitted parameters are in pred's units: asymptotes 5 and 1, midpoint 0, slope 1/3
    np.testing.assert_allclose(fit.params, [5, 1, 0, 1 / 3], atol=1e-4)
    # a decreasing relation fits as well, and pred's scale does not matter
    assert M.plcc_logistic(-pred, human).plcc > 0.999
    assert M.plcc_logistic(1000 * pred + 7, human).plcc > 0.999


def test_logistic_failure_is_reported(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(M.optimize, "curve_fit", fail)
    pred, human = sigmoid_relation(50)
    with pytest.warns(M.MetricWarning, match="failed from every start"):
        fit = M.plcc_logistic(pred, human)
    assert not fit.converged and np.isnan(fit.plcc) and fit.params is None
    assert "Optimal parameters not found" in fit.message
    with pytest.warns(M.MetricWarning, match="constant"):
        fit = M.plcc_logistic(np.ones(5), np.arange(5.0))
    assert not fit.converged and np.isnan(fit.plcc)
    with pytest.warns(M.MetricWarning, match="needs at least 4 items, got 3"):
        fit = M.plcc_logistic([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])  # curve_fit itself raises TypeError here
    assert not fit.converged and np.isnan(fit.plcc)


def test_logistic_falls_back_to_next_start(monkeypatch):
    real, calls = M.optimize.curve_fit, []

    def first_fails(*args, **kwargs):
        calls.append(kwargs["p0"])
        if len(calls) == 1:
            raise RuntimeError("maxfev reached")
        return real(*args, **kwargs)

    monkeypatch.setattr(M.optimize, "curve_fit", first_fails)
    fit = M.plcc_logistic(*sigmoid_relation())
    assert len(calls) == 2 and calls[0] != calls[1]
    assert fit.converged and fit.plcc > 0.999


def test_within_source_srcc_matches_loop():
    n = 2000
    src = RNG.integers(0, 300, n)
    pred = RNG.integers(0, 4, n).astype(float)
    human = pred + RNG.normal(0, 1, n)
    expected = []
    for s in np.unique(src):
        m = src == s
        if m.sum() >= 3 and np.ptp(pred[m]) > 0 and np.ptp(human[m]) > 0:
            expected.append(stats.spearmanr(pred[m], human[m]).statistic)
    mean, count = M.within_source_srcc(pred, human, src)
    assert count == len(expected) and 0 < count < 300
    assert mean == pytest.approx(np.mean(expected), abs=1e-12)


def test_within_source_srcc_hand_case():
    # source x: perfect (+1); y: reversed (-1); z: 2 items (skipped); w: constant pred (skipped)
    src = ["x"] * 3 + ["y"] * 3 + ["z"] * 2 + ["w"] * 3
    pred = [1, 2, 3, 1, 2, 3, 1, 2, 5, 5, 5]
    human = [1, 2, 3, 3, 2, 1, 1, 2, 1, 2, 3]
    assert M.within_source_srcc(pred, human, src) == (pytest.approx(0.0), 2)
    human[3:6] = [1, 3, 2]  # y: ranks (1,2,3) vs (1,3,2) -> 0.5
    assert M.within_source_srcc(pred, human, src) == (pytest.approx(0.75), 2)


def test_evaluate_scores_keys_and_values():
    pred, human = sigmoid_relation(60)
    src = np.repeat(np.arange(12), 5)
    out = M.evaluate_scores(pred, human, src)
    assert {"srcc", "plcc", "plcc_logistic", "krcc", "within_source_srcc", "n"} <= set(out)
    assert out["n"] == 60 and out["n_sources"] == 12 and out["logistic_converged"]
    assert out["srcc"] == pytest.approx(1) and out["within_source_srcc"] == pytest.approx(1)
    assert out["plcc"] < 0.99 < out["plcc_logistic"]


# ---------------------------------------------------------------------------------------------- pairwise


def test_pairwise_accuracy_hand_case():
    a = [3.0, 1.0, 2.0, 2.0, 4.0, 1.0]
    b = [1.0, 2.0, 2.0, 1.0, 4.05, 3.0]
    majority = ["a", "a", "b", "tie", "tie", "tie"]
    # decided pairs: agree, disagree, exact score tie (0.5) -> 1.5 / 3
    out = M.pairwise_accuracy(a, b, majority, tie_tol=0.1)
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["n_pairs"] == 6 and out["n_ties"] == 3
    # tie pairs |diff| = 1, 0.05, 2 -> one within 0.1
    assert out["tie_agreement"] == pytest.approx(1 / 3)
    # scale-free default: tolerance = |diff| quantile at the human tie rate (1/2)
    auto = M.pairwise_accuracy(a, b, majority)
    assert auto["tie_tol"] == pytest.approx(np.quantile([2, 1, 0, 1, 0.05, 2], 0.5))
    assert auto["tie_agreement"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="index 1 is 'B'"):
        M.pairwise_accuracy(a, b, ["a", "B", "b", "tie", "tie", "tie"])


def test_vote_agreement_hand_case():
    a, b = [2.0, 1.0, 3.0], [1.0, 2.0, 3.0]
    p_a = [0.75, 0.75, 0.2]
    assert M.vote_agreement(a, b, p_a) == pytest.approx((0.75 + 0.25 + 0.5) / 3)
    assert M.vote_agreement(a, b, p_a, weights=[2, 1, 1]) == pytest.approx((1.5 + 0.25 + 0.5) / 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.vote_agreement(a, b, [1.5, 0, 0])


def test_vote_counts_and_majority():
    pairs, na, nb, nt = M.vote_counts(["p2", "p1", "p1", "p2", "p1"], ["b", "a", "tie", "b", "a"])
    assert pairs.tolist() == ["p1", "p2"]
    assert na.tolist() == [2, 0] and nb.tolist() == [0, 2] and nt.tolist() == [1, 0]
    assert M.majority_label([2, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0]).tolist() == ["a", "tie", "tie", "tie"]


def test_human_ceiling_hand_case():
    # (3a, 1b): the three a-votes match their LOO majority (a), the b-vote does not -> 3/4
    # (1a, 1b, 1tie): every LOO majority is a draw -> pair not scored
    # (2a, 0b, 1tie): a-votes' LOO majority is a draw (skipped); the tie vote vs 'a' scores 0.5 -> 0.5
    # (1a): a single vote has no others -> not scored
    out = M.human_ceiling([3, 1, 2, 1], [1, 1, 0, 0], [0, 1, 1, 0])
    assert out["loo_agreement"] == pytest.approx((0.75 + 0.5) / 2)
    assert out["n_pairs"] == 2
    assert out["vote_agreement_bound"] == pytest.approx((0.75 + 0.5 + 2.5 / 3 + 1) / 4)


def test_human_ceiling_unanimous_and_split():
    assert M.human_ceiling([5, 0], [0, 4], [0, 0])["loo_agreement"] == pytest.approx(1.0)
    # (2a, 2b): each vote's LOO majority is the other side -> 0
    assert M.human_ceiling([2], [2], [0])["loo_agreement"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- hallucination


def test_hallucination_matches_sklearn():
    label = RNG.random(500)  # vote fractions
    prob = np.clip(label + RNG.normal(0, 0.3, 500), 0, 1)
    y = (label > 0.5).astype(int)
    out = M.hallucination_metrics(prob, label)
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(y, prob))
    assert out["ap"] == pytest.approx(skm.average_precision_score(y, prob))
    assert out["f1"] == pytest.approx(skm.f1_score(y, prob >= 0.5))
    assert 0.6 < out["auroc"] < 1 and out["n_positive"] == y.sum()
    assert sum(out["reliability"]["count"]) == 500


def test_ece_hand_case():
    prob = [0.05, 0.15, 0.15, 0.95, 0.95, 1.0]
    label = [0, 1, 0, 1, 1, 0]
    out = M.hallucination_metrics(prob, label, n_bins=10)
    # bin 0: p 0.05, freq 0 -> 0.05 * 1/6; bin 1: p 0.15, freq 0.5 -> 0.35 * 2/6;
    # bin 9 (1.0 included): p 0.9667, freq 2/3 -> 0.3 * 3/6
    assert out["ece"] == pytest.approx((0.05 + 0.7 + 0.9) / 6)
    rel = out["reliability"]
    assert rel["count"] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 3]
    assert rel["mean_prob"][1] == pytest.approx(0.15) and rel["frequency"][9] == pytest.approx(2 / 3)
    assert np.isnan(rel["mean_prob"][4])
    # a perfectly calibrated case has ECE 0
    assert M.hallucination_metrics([0.25] * 4, [1, 0, 0, 0], n_bins=4)["ece"] == pytest.approx(0.0)


def test_hallucination_single_class():
    with pytest.warns(M.MetricWarning, match="all 4 labels are negative"):
        out = M.hallucination_metrics([0.1, 0.2, 0.3, 0.4], [0, 0.5, 0.2, 0])
    assert np.isnan(out["auroc"]) and np.isnan(out["ap"]) and np.isnan(out["f1"])
    assert out["ece"] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------- leaderboard


def test_leaderboard():
    models = np.repeat(["m3", "m1", "m2", "m4"], 25)
    human = np.repeat([3.0, 1.0, 2.0, 4.0], 25) + RNG.normal(0, 0.1, 100)
    out = M.leaderboard(
        {"same": human, "reversed": -human, "noisy": human + RNG.normal(0, 3, 100)}, models, human
    )
    assert out["models"] == ["m1", "m2", "m3", "m4"]
    np.testing.assert_allclose(out["human"], [human[models == m].mean() for m in out["models"]])
    assert out["means"]["same"] == out["human"]
    assert out["kendall_tau"]["same"] == pytest.approx(1.0)
    assert out["kendall_tau"]["reversed"] == pytest.approx(-1.0)
    with pytest.warns(M.MetricWarning):
        assert np.isnan(M.leaderboard({"x": np.arange(4.0)}, ["m"] * 4, np.arange(4.0))["kendall_tau"]["x"])


# ---------------------------------------------------------------------------------------------- bootstrap


def make_sources(n_sources, per_source=5, seed=1):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_sources), per_source)
    human = rng.normal(size=groups.size) + rng.normal(size=n_sources)[groups]
    return groups, human + rng.normal(0, 0.8, groups.size), human


def test_bootstrap_ci():
    groups, pred, human = make_sources(60)
    point = M.srcc(pred, human)
    low, high = M.bootstrap_ci(M.srcc, groups, pred, human, n_boot=300)
    assert low < point < high
    assert (low, high) == M.bootstrap_ci(M.srcc, groups, pred, human, n_boot=300)
    assert (low, high) != M.bootstrap_ci(M.srcc, groups, pred, human, n_boot=300, seed=1)
    big = M.bootstrap_ci(M.srcc, *make_sources(600), n_boot=300)
    assert big[1] - big[0] < 0.5 * (high - low)


def test_bootstrap_resamples_whole_sources():
    # every source holds identical items, so any resampling by source keeps the per-source mean exact
    groups = np.repeat(np.arange(10), 4)
    values = groups.astype(float)
    low, high = M.bootstrap_ci(lambda v: np.ptp(np.bincount(v.astype(int)) % 4), groups, values, n_boot=50)
    assert low == high == 0  # each drawn source brings all 4 of its items


def test_bootstrap_with_groups_relabels_duplicates():
    groups, pred, human = make_sources(40)
    seen = []

    def metric(p, h, g):
        seen.append(np.unique(g).size)
        return M.within_source_srcc(p, h, g)[0]

    low, high = M.bootstrap_ci(metric, groups, pred, human, n_boot=20, with_groups=True)
    assert seen == [40] * 20  # 40 draws -> 40 distinct labels even when a source is drawn twice
    point = M.within_source_srcc(pred, human, groups)[0]
    assert low < point < high


def test_bootstrap_nan_replicates_ignored():
    groups = np.arange(6)
    pred = np.array([1.0, 1, 1, 1, 1, 2])  # replicates that miss item 5 are constant -> NaN

    with pytest.warns(M.MetricWarning, match="replicates were NaN"):
        low, high = M.bootstrap_ci(M.srcc, groups, pred, np.arange(6.0), n_boot=200)
    assert np.isfinite(low) and np.isfinite(high)
