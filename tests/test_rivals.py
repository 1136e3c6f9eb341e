"""The trivial rivals (restoration strength, restorer prior, distance-from-input hallucination detection) and the
split that holds whole restoration models out of training."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from llscore.data.build import build_dataset
from llscore.data.config import DataConfig
from llscore.data.prepared import load_prepared
from llscore.errors import DataError
from llscore.evaluation import (
    Evaluators,
    evaluate,
    hallucination_detection,
    load_eval_data,
    rival_metrics,
    rival_scores,
)
from llscore.metrics import MetricWarning, within_group_auroc
from llscore.report import markdown_report
from llscore.rivals import RESTORATION_STRENGTH, RESTORER_PRIOR, restoration_strength, restorer_prior

HELD_OUT = ["conv_restormer_like", "lgm_flux_edit_like"]


def _save(path, pixels) -> str:
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return str(path)


def test_restoration_strength_is_the_rmse_from_the_input(tmp_path):
    degraded = _save(tmp_path / "in.png", np.full((8, 8, 3), 100))
    unchanged = _save(tmp_path / "same.png", np.full((8, 8, 3), 100))
    brighter = _save(tmp_path / "up.png", np.full((8, 8, 3), 110))
    half = np.full((8, 8, 3), 100)
    half[:4] = 120  # half of the pixels moved by 20: RMSE = sqrt(20² / 2)
    halved = _save(tmp_path / "half.png", half)
    larger = _save(
        tmp_path / "large.png", np.full((16, 16, 3), 130)
    )  # an upscaled output: the input is resized
    got = restoration_strength([unchanged, brighter, halved, larger], [degraded] * 4, progress=False)
    np.testing.assert_allclose(got, [0.0, 10 / 255, np.sqrt(200) / 255, 30 / 255], atol=1e-9)


def test_restorer_prior_is_the_training_mean_and_unseen_models_get_the_overall_mean():
    train = pd.DataFrame({"model": ["a", "a", "b"], "score": [1.0, 3.0, 5.0]})
    got = restorer_prior(train, pd.Series(["b", "a", "new"]))
    np.testing.assert_allclose(got, [5.0, 2.0, 3.0])


def test_within_restorer_auroc_tells_detection_from_knowing_who_hallucinates():
    models = np.array(["x", "x", "x", "x", "y", "y", "y", "y", "z", "z"])
    labels = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    who = np.where(models == "x", 0.9, np.where(models == "y", 0.5, 0.1))  # knows only who hallucinates more
    seeing = np.array([0.6, 0.7, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.9, 0.9])  # sees it inside each restorer
    assert within_group_auroc(who, labels, models) == (0.5, 2)  # z has no hallucination: not counted
    assert within_group_auroc(seeing, labels, models) == (1.0, 2)
    images = pd.DataFrame({"model": models, "hallucination": labels.astype(float)})
    knowing = hallucination_detection(images, who)
    # 3 hallucinated × 7 faithful: each 0.9 beats 5 and ties 2, the 0.5 beats 2 and ties 3
    assert knowing["auroc"] == pytest.approx(15.5 / 21) and knowing["within_restorer_auroc"] == 0.5
    with pytest.warns(MetricWarning):
        value, used = within_group_auroc(who[8:], labels[8:], models[8:])
    assert np.isnan(value) and used == 0


@pytest.fixture(scope="module")
def held_out(mini_bench, tmp_path_factory):
    config = DataConfig(ratios={"train": 0.5, "val": 0.2, "test": 0.3}, holdout_models=HELD_OUT)
    return build_dataset(mini_bench, tmp_path_factory.mktemp("holdout") / "prepared", config)


def test_held_out_models_never_reach_training_or_validation(held_out):
    prepared = load_prepared(held_out)
    for split in ("train", "val"):
        quality = prepared.quality[split].to_pandas()
        labels = prepared.hallucination[split].to_pandas()
        assert len(quality) and not quality["model"].isin(HELD_OUT).any()
        assert not labels["model"].isin(HELD_OUT).any()
        pairs = prepared.pairs[split].to_pandas()
        model_of = quality.set_index("image_id")["model"]
        assert pairs["image_a"].isin(model_of.index).all() and pairs["image_b"].isin(model_of.index).all()
    test = prepared.quality["test"].to_pandas()
    assert set(HELD_OUT) <= set(test["model"])
    assert json.loads((held_out / "splits.json").read_text())["holdout_models"] == HELD_OUT


def test_an_unknown_held_out_model_is_an_error_naming_the_models(mini_bench, tmp_path):
    config = DataConfig(holdout_models=["conv_restormer_lik"])
    with pytest.raises(DataError, match=r"conv_restormer_lik.*conv_restormer_like"):
        build_dataset(mini_bench, tmp_path / "prepared", config)


def test_the_report_sets_llscore_beside_the_rivals_and_the_unseen_restorers(held_out):
    data = load_eval_data(held_out, "test")
    assert set(data.images.loc[data.images["unseen_restorer"], "model"]) == set(HELD_OUT)
    rivals = rival_scores(data, progress=False)
    human = data.images["human_score"].to_numpy()
    labels = np.nan_to_num(data.images["hallucination"].to_numpy())
    evaluators = Evaluators(scores={"llscore": human, **rivals}, p_hallucination=labels)
    report = evaluate(data, evaluators, n_boot=20)
    unseen = report["unseen_restorers"]
    assert unseen["models"] == sorted(HELD_OUT)
    assert unseen["n_images"] == int(data.images["model"].isin(HELD_OUT).sum())
    assert unseen["scores"]["llscore"]["srcc"] == pytest.approx(1.0)
    assert unseen["scores"]["llscore"]["pairwise_acc"] > unseen["scores"][RESTORER_PRIOR]["pairwise_acc"]
    assert report["hallucination"]["within_restorer_auroc"] == pytest.approx(1.0)
    strength = report["hallucination_rivals"][RESTORATION_STRENGTH]
    assert 0 <= strength["auroc"] <= 1 and strength["n_restorers"] >= 1
    assert report["overall"][RESTORER_PRIOR]["n_images"] == len(data.images)
    text = markdown_report(report, "test")
    assert "What LL-Score must beat" in text and "restorer prior" in text and "unseen restorers" in text
    validation = rival_metrics(data, progress=False)
    assert validation[RESTORATION_STRENGTH]["within_source_srcc"] == pytest.approx(
        report["overall"][RESTORATION_STRENGTH]["within_source_srcc"]
    )
