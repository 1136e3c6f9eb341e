"""LL-Bench-mini: layout, determinism, coverage, the human model, fitted scores vs the truth, refusal to clobber."""

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from llscore.data import schema
from llscore.data.bradley_terry import fit_bradley_terry
from llscore_sim.mini_bench import MODELS, TASKS, make_mini_bench
from llscore_sim.mini_bench.annotators import annotator_pool
from llscore_sim.mini_bench.bench import annotate, draw_source
from llscore_sim.mini_bench.degradations import blur
from llscore_sim.mini_bench.perception import perceive
from llscore_sim.mini_bench.restorers import clean_fidelity

REPO = Path(__file__).resolve().parents[1]


def _table(bench: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(bench / name, keep_default_na=False)


def _hashes(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def restored(mini_bench) -> pd.DataFrame:
    """One row per restored image with its fitted score, hidden truth and hallucination votes."""
    images = _table(mini_bench, schema.IMAGES)
    return (
        images[images["kind"] == "restored"]
        .merge(_table(mini_bench, schema.SCORES), on="image_id", validate="1:1")
        .merge(_table(mini_bench, schema.GROUND_TRUTH), on="image_id", validate="1:1")
        .merge(_table(mini_bench, schema.HALLUCINATION), on="image_id", validate="1:1")
    )


def test_layout_follows_the_schema(mini_bench):
    for name, columns in schema.COLUMNS.items():
        assert tuple(_table(mini_bench, name).columns) == columns, name
    images = _table(mini_bench, schema.IMAGES)
    assert images["image_id"].is_unique
    assert set(images["kind"]) == set(schema.KINDS)
    for row in images.itertuples():
        with Image.open(mini_bench / row.path) as image:
            assert (image.mode, image.size) == ("RGB", (112, 112)), row.path
        if row.kind == "restored":
            assert row.model and row.model_family in schema.FAMILIES
        else:
            assert row.model == row.model_family == ""
    per_source = images.groupby("source_id")["kind"].value_counts().unstack()
    assert (per_source["degraded"] == 1).all() and (per_source["reference"] == 1).all()

    pairs = _table(mini_bench, schema.PAIRS)
    source_of = images.set_index("image_id")["source_id"]
    assert (source_of[pairs["image_a"]].to_numpy() == pairs["source_id"]).all()
    assert (source_of[pairs["image_b"]].to_numpy() == pairs["source_id"]).all()
    assert set(pairs["preference"]) <= set(schema.PREFERENCES)

    restored_ids = images[images["kind"] == "restored"].groupby("source_id")["image_id"].apply(set)
    for row in _table(mini_bench, schema.RANKINGS).itertuples():
        ranked = row.ranking.split(schema.RANKING_SEPARATOR)
        assert len(ranked) == len(set(ranked)) and set(ranked) == restored_ids[row.source_id]


def test_covers_tasks_families_models_ties_and_both_labels(mini_bench, restored):
    images = _table(mini_bench, schema.IMAGES)
    assert images.groupby("source_id")["task"].first().value_counts().to_dict() == dict.fromkeys(TASKS, 1)
    assert set(restored["model_family"]) == set(schema.FAMILIES)
    families = restored.groupby("source_id")["model_family"].value_counts().unstack()
    assert (families["lgm"] >= 4).all() and (families["conventional"] >= 4).all()
    assert (restored.groupby("source_id")["model"].nunique() == len(MODELS)).all()
    assert (_table(mini_bench, schema.PAIRS)["preference"] == "tie").any()
    votes = restored["hallucination"]
    assert votes.between(0, 1).all() and (votes == 0).any() and (votes > 0.5).any()
    truth = restored.groupby("hallucinated")["hallucination"].mean()
    assert truth[1] > 0.5 > 0.1 > truth[0]
    assert restored.groupby("model_family")["hallucinated"].mean().idxmax() == "lgm"


def test_fitted_scores_agree_with_perceived_utility(restored):
    assert np.isfinite(restored["score"]).all() and (restored["std"] > 0).all()
    assert np.allclose(restored.groupby("source_id")["score"].mean(), 0, atol=1e-6)  # the gauge
    assert spearmanr(restored["score"], restored["utility"])[0] > 0.8
    within = [spearmanr(g["score"], g["utility"])[0] for _, g in restored.groupby("source_id")]
    assert np.mean(within) > 0.85


def test_classic_metrics_do_not_solve_it(mini_bench, restored):
    def pixels(path):
        return np.asarray(Image.open(mini_bench / path), dtype=np.float64) / 255

    images = _table(mini_bench, schema.IMAGES)
    degraded = images[images["kind"] == "degraded"].set_index("source_id")["path"]
    outputs = np.stack([pixels(p) for p in restored["path"]])
    inputs = np.stack([pixels(degraded[s]) for s in restored["source_id"]])
    psnr = -10 * np.log10(np.mean((outputs - inputs) ** 2, axis=(1, 2, 3)))
    assert abs(spearmanr(psnr, restored["score"])[0]) < 0.5

    pyiqa = pytest.importorskip("pyiqa")
    torch = pytest.importorskip("torch")
    piqe = pyiqa.create_metric("piqe", device="cpu")
    with torch.no_grad():
        badness = piqe(torch.from_numpy(outputs).permute(0, 3, 1, 2).float()).flatten().numpy()
    assert abs(spearmanr(-badness, restored["score"])[0]) < 0.5


def test_same_seed_same_bytes_other_seed_other_bench(mini_bench, tmp_path):
    expected = _hashes(mini_bench)
    assert _hashes(make_mini_bench(tmp_path / "again", seed=0, n_sources=16, workers=1)) == expected
    other = _hashes(make_mini_bench(tmp_path / "other", seed=1, n_sources=16))
    assert other.keys() == expected.keys()
    assert other[schema.PAIRS] != expected[schema.PAIRS]
    assert other["images/src000/degraded.png"] != expected["images/src000/degraded.png"]


def test_refuses_a_non_empty_folder_unless_overwrite(mini_bench, tmp_path):
    before = _hashes(mini_bench)
    with pytest.raises(FileExistsError, match=r"not empty.*--overwrite") as error:
        make_mini_bench(mini_bench, n_sources=1)
    assert str(mini_bench) in str(error.value)
    assert _hashes(mini_bench) == before

    target = tmp_path / "bench"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    make_mini_bench(target, n_sources=1, overwrite=True)
    assert not (target / "stale.txt").exists() and (target / schema.IMAGES).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no temporary folders left behind


def test_cli_writes_a_bench_and_then_refuses_to_overwrite_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "data_prep/make_mini_bench.py", "--out", str(tmp_path / "b"), "--sources", "2"]
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert len(_table(tmp_path / "b", schema.IMAGES)) == 2 * (2 + len(MODELS))
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "--overwrite" in second.stderr and str(tmp_path / "b") in second.stderr


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(0)
    groups, items = 4, 6
    truth = rng.normal(0, 1, (groups, items))
    truth = (truth - truth.mean(axis=1, keepdims=True)).ravel()
    n = 8000
    group = rng.integers(0, groups, n)
    i = rng.integers(0, items, n)
    a, b = group * items + i, group * items + (i + rng.integers(1, items, n)) % items
    d = truth[a] - truth[b] + rng.logistic(size=n)
    outcome = np.where(np.abs(d) < 0.2, 0.5, (d > 0).astype(float))  # a tie band, counted as half a win
    labels = np.repeat(np.arange(groups), items)

    scores, std = fit_bradley_terry(a, b, outcome, groups * items)
    assert np.allclose(scores.reshape(groups, items).mean(axis=1), 0, atol=1e-6)
    assert np.all(np.abs(scores - truth) < 4 * std) and np.corrcoef(scores, truth)[0, 1] > 0.98
    assert 0.03 < std.mean() < 0.3

    grouped, grouped_std = fit_bradley_terry(a, b, outcome, groups * items, groups=labels)
    assert np.allclose(grouped, scores, atol=1e-5) and np.allclose(grouped_std, std)
    with pytest.raises(ValueError, match="same group"):
        fit_bradley_terry(a, b, outcome, groups * items, groups=np.arange(groups * items) % 2)


def test_votes_depend_only_on_what_annotators_are_shown():
    """Same degraded input and restorations, another clean scene: identical utilities and votes."""
    draw = draw_source(3, seed=0, size=64, width=3)
    other = dataclasses.replace(draw, clean=draw_source(4, seed=0, size=64, width=3).clean)
    pool = annotator_pool(np.random.default_rng(1))
    utility, trials = annotate(draw, pool, np.random.default_rng(2))
    utility_other, trials_other = annotate(other, pool, np.random.default_rng(2))
    assert np.array_equal(utility, utility_other)
    for (annotator, trial), (annotator_other, trial_other) in zip(trials, trials_other, strict=True):
        assert annotator == annotator_other and trial.pairs == trial_other.pairs
        assert np.array_equal(trial.flags, trial_other.flags)
    # The clean scene does change what only the simulation can measure, so the check above could fail.
    fidelity = [clean_fidelity(r, draw.clean) for r in draw.restorations]
    assert fidelity != [clean_fidelity(r, other.clean) for r in draw.restorations]


def _noisy_source(rng):
    clean = np.clip(rng.uniform(0.2, 0.8) + 0.1 * rng.normal(size=(48, 48, 3)), 0, 1)
    clean = np.asarray(blur(clean, 1.0), dtype=np.float32)
    noise = 0.15 * rng.normal(size=clean.shape).astype(np.float32)
    return clean, clean + noise, noise


def test_perception_ranks_residual_degradation_and_visible_hallucinations():
    clean, degraded, noise = _noisy_source(np.random.default_rng(0))
    residuals = (0.0, 0.1, 0.2, 0.4, 0.8)
    restorations = np.stack([clean + r * noise for r in residuals])
    faithful = np.zeros((len(residuals), *clean.shape[:2]), dtype=bool)
    seen = perceive(degraded, restorations, faithful)
    assert np.all(np.diff([p.residual for p in seen]) > 0)
    assert np.all(np.diff([p.base_utility for p in seen]) < 0)
    assert all(p.hallucination_visibility == 0 for p in seen)

    # The same region replaced by content of growing contrast against what the input shows.
    mask = np.zeros(clean.shape[:2], dtype=bool)
    mask[10:30, 10:30] = True
    edited = []
    for contrast in (0.0, 0.1, 0.4):
        image = restorations[1].copy()
        image[10:30, 10:30] += contrast * np.sign(np.sin(np.arange(20) / 2))[None, :, None]
        edited.append(image)
    masks = np.stack([faithful[0]] * len(residuals) + [mask] * 3)
    seen = perceive(degraded, np.concatenate([restorations, np.stack(edited)]), masks)[len(residuals) :]
    visibility = [p.hallucination_visibility for p in seen]
    assert visibility[0] < 0.2 * visibility[1] and visibility[1] < visibility[2]
    spot = [p.spot_probability(0.9) for p in seen]
    assert spot[0] < 0.2 < spot[1] < spot[2] <= 0.9
    annotator = annotator_pool(np.random.default_rng(0))[0]
    utilities = [annotator.expected_utility(p) for p in seen]
    assert utilities[0] > utilities[1] > utilities[2]


def test_the_halo_penalty_grows_with_halo_visibility():
    """Unsharp masks of growing gain over one source: visibility and penalty rise with the gain; no halo when the
    output is no sharper than the consensus; a strong halo costs more than a fifth of the visible degradation."""
    source = draw_source(3, 0, 112, 3)
    restorations = np.stack([r.image for r in source.restorations])
    agreed = np.median(restorations, axis=0)
    gains = (0.0, 0.25, 0.5, 1.0, 2.0)
    sharpened = np.stack([np.clip(agreed + g * (agreed - blur(agreed, 1.5)), 0, 1) for g in gains])
    smoothed = blur(agreed, 1.0)[None]
    images = np.concatenate([restorations, sharpened, smoothed])
    seen = perceive(source.degraded, images, np.zeros(images.shape[:3], dtype=bool), agreed=agreed)[
        len(restorations) :
    ]
    halos = [p.halo for p in seen[: len(gains)]]
    assert halos[0] == pytest.approx(0.0, abs=1e-6) and seen[-1].halo == 0.0
    assert np.all(np.diff(halos) > 0)
    utilities = [p.base_utility for p in seen[: len(gains)]]
    assert np.all(np.diff(utilities[1:]) < 0)
    assert utilities[0] - utilities[3] > 0.3
