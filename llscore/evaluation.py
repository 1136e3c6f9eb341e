"""The evaluation protocol of docs/evaluation.md: LL-Score and the baselines against humans on one split.

Every evaluator ("llscore" and each baseline column) is measured the same way: correlations overall, per task
and per model family, within-source SRCC, pairwise accuracy against the human majority of each pair and
agreement with the individual votes, a restoration-model leaderboard, and bootstrap intervals over source
images. Hallucination metrics apply to LL-Score's P(hallucination).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from llscore import metrics
from llscore.api import LLScore
from llscore.data.prepared import PreparedData, load_prepared
from llscore.data.provenance import split_record
from llscore.errors import CheckpointError, ConfigError, DataError, EvaluationError
from llscore.rivals import RESTORATION_STRENGTH, RESTORER_PRIOR, restoration_strength, restorer_prior

GROUPINGS = {"per_task": "task", "per_family": "model_family"}
VALIDATION_METRICS = ("srcc", "plcc", "within_source_srcc", "pairwise_acc")
"""What in-training validation logs (with the mean score and the hallucination AUROC)."""


@dataclass
class EvalData:
    """One split: a row per restored image (human score, labels, paths) and a row per human-compared pair."""

    images: pd.DataFrame
    pairs: pd.DataFrame
    split: str
    prepared_dir: Path
    record: dict = field(default_factory=dict)
    """What the split is (`llscore.data.provenance.split_record`), with the number of images scored."""


@dataclass
class Evaluators:
    """Per-image scores of every evaluator (higher = better), aligned with `EvalData.images`."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    p_hallucination: np.ndarray | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


def split_data(prepared: PreparedData, split: str, max_images: int | None = None) -> EvalData:
    """One split with the human scores, hallucination labels and compared pairs; `max_images` keeps whole
    sources (drawn with a fixed seed) until about that many images, with the pairs among them."""
    images = prepared.quality[split].to_pandas()
    if images.empty:
        raise DataError(f"{prepared.path}: the {split!r} split has no scored images")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_val_images must be at least 1, got {max_images}")
    if max_images is not None and len(images) > max_images:
        counts = images["source_id"].value_counts(sort=False)
        order = counts.index.to_series().sample(frac=1.0, random_state=0)
        kept = order[counts[order].cumsum().shift(fill_value=0) < max_images]
        images = images[images["source_id"].isin(kept)]
    labels = prepared.hallucination[split].to_pandas().set_index("image_id")["label"]
    images = images.rename(columns={"score": "human_score"}).drop(columns=["soft_target"])
    images["hallucination"] = labels.reindex(images["image_id"]).to_numpy(dtype=float)
    train = prepared.quality["train"].to_pandas()[["model", "score"]]
    images[RESTORER_PRIOR] = restorer_prior(train, images["model"])
    images["unseen_restorer"] = ~images["model"].isin(train["model"])
    pairs = prepared.pairs[split].to_pandas()
    pairs = pairs[pairs["image_a"].isin(images["image_id"]) & pairs["image_b"].isin(images["image_id"])]
    record = split_record(prepared.report, split) | {"images_scored": len(images)}
    return EvalData(images.reset_index(drop=True), pairs.reset_index(drop=True), split, prepared.path, record)


def load_eval_data(prepared_dir: str | Path, split: str = "test") -> EvalData:
    """One split of a prepared dataset (data_prep makes it; `llscore.data.inputs.ensure_prepared` for a raw
    bench folder)."""
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / "splits.json").is_file():
        raise EvaluationError(
            f"{prepared_dir}: not a prepared dataset (no splits.json); build one with data_prep/build_dataset.py"
        )
    prepared = load_prepared(prepared_dir)
    if split not in prepared.quality:
        raise EvaluationError(f"{prepared_dir}: no split {split!r}; splits: {sorted(prepared.quality)}")
    return split_data(prepared, split)


def score_split(
    scorer: LLScore, images: pd.DataFrame, batch_size: int, progress: bool = True, workers: int = 0
) -> pd.DataFrame:
    """LL-Score's score, its std and P(hallucination) for every restored image with its input, in row order,
    shared out over the processes of `accelerate launch` (`LLScore.score_across_processes`)."""
    results = scorer.score_across_processes(
        images["restored"].tolist(),
        images["degraded"].tolist(),
        batch_size=batch_size,
        progress=progress,
        workers=workers,
    )
    return pd.DataFrame(
        {"llscore": results.score, "llscore_std": results.std, "p_hallucination": results.p_hallucination}
    )


def score_with_llscore(
    ckpt: str | Path,
    images: pd.DataFrame,
    batch_size: int,
    device: str | None,
    zero_shot: bool = False,
    workers: int = 0,
) -> pd.DataFrame:
    """`score_split` with a checkpoint (`zero_shot`: a base model without llscore_config.json is scored with the
    default prompt contract)."""
    try:
        scorer = LLScore.from_pretrained(ckpt, device=device, zero_shot=zero_shot)
    except (CheckpointError, OSError) as err:
        raise EvaluationError(f"cannot load checkpoint {ckpt}: {err}") from err
    return score_split(scorer, images, batch_size, workers=workers)


def llscore_metrics(data: EvalData, scored: pd.DataFrame) -> dict[str, float]:
    """The validation numbers of a `score_split` result: the same functions (and so the same values) as
    eval.py's `overall.llscore` and `hallucination.auroc` in metrics.json."""
    measured = _measure(data.images, data.pairs, scored["llscore"].to_numpy(dtype=float))
    out = {key: measured.get(key, np.nan) for key in VALIDATION_METRICS}  # NaN below 3 scored images
    out["mean_score"] = float(scored["llscore"].mean())
    detection = hallucination_detection(data.images, scored["p_hallucination"].to_numpy(dtype=float))
    out |= {f"hallucination_{key}": value for key, value in detection.items() if key.endswith("auroc")}
    return {k: float(v) for k, v in out.items()}


def rival_scores(data: EvalData, progress: bool = True) -> dict[str, np.ndarray]:
    """The trivial rivals' scores (`llscore.rivals`), aligned with `data.images`."""
    images = data.images
    strength = restoration_strength(images["restored"].tolist(), images["degraded"].tolist(), progress)
    return {RESTORATION_STRENGTH: strength, RESTORER_PRIOR: images[RESTORER_PRIOR].to_numpy(dtype=float)}


def rival_metrics(data: EvalData, progress: bool = True) -> dict[str, dict[str, float]]:
    """What the trivial rivals reach on a split, measured as `llscore_metrics` measures LL-Score (printed and
    saved beside the in-training validation)."""
    scores = rival_scores(data, progress)
    out = {}
    for name, score in scores.items():
        measured = _measure(data.images, data.pairs, score)
        out[name] = {key: float(measured.get(key, np.nan)) for key in VALIDATION_METRICS}
    detection = hallucination_detection(data.images, scores[RESTORATION_STRENGTH])
    out[RESTORATION_STRENGTH] |= {
        f"hallucination_{k}": v for k, v in detection.items() if k.endswith("auroc")
    }
    return out


def hallucination_detection(images: pd.DataFrame, prob: np.ndarray) -> dict[str, float]:
    """AUROC of a hallucination score over all labelled images and within each restoration model that has both
    hallucinated and faithful outputs (averaged): the second tells detection from knowing who hallucinates."""
    known = ~np.isnan(images["hallucination"].to_numpy())
    labels = images["hallucination"].to_numpy()[known]
    if not known.any() or len(np.unique(labels > 0.5)) < 2:
        return {}
    within, n_restorers = metrics.within_group_auroc(prob[known], labels, images["model"].to_numpy()[known])
    return {
        "auroc": float(skm.roc_auc_score(labels > 0.5, prob[known])),
        "within_restorer_auroc": within,
        "n_restorers": n_restorers,
    }


def _pair_scores(
    images: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    position = pd.Series(np.arange(len(images)), index=images["image_id"])
    return score[position.reindex(pairs["image_a"]).to_numpy()], score[
        position.reindex(pairs["image_b"]).to_numpy()
    ]


def _measure(
    images: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, rows: np.ndarray | None = None
) -> dict:
    """Correlation and pairwise agreement of one evaluator with the humans on these images and pairs (`rows`:
    the images the correlations are measured on, default all; pairs are looked up among all `images`)."""
    known = ~np.isnan(score) if rows is None else ~np.isnan(score) & rows
    out: dict = {"n_images": int(known.sum()), "n_pairs": len(pairs)}
    if known.sum() < 3:
        return out | {"error": "fewer than 3 scored images"}
    out |= metrics.evaluate_scores(
        score[known], images["human_score"].to_numpy()[known], images["source_id"][known]
    )
    if len(pairs):
        a, b = _pair_scores(images, pairs, score)
        usable = ~(np.isnan(a) | np.isnan(b))
        pairwise = metrics.pairwise_accuracy(a[usable], b[usable], pairs["majority"].to_numpy()[usable])
        out["pairwise_acc"] = pairwise["accuracy"]
        out["pairwise_ties"] = pairwise["n_ties"]
        out["pairwise_tie_agreement"] = pairwise["tie_agreement"]
        out["vote_agreement"] = metrics.vote_agreement(
            a[usable],
            b[usable],
            pairs["p_a_better"].to_numpy()[usable],
            weights=pairs["n_votes"].to_numpy()[usable],
        )
    return out


def _bootstrap(images: pd.DataFrame, score: np.ndarray, n_boot: int, seed: int) -> dict:
    """95% intervals of SRCC and PLCC, resampling source images; none (with a warning) from a single source,
    where every resample is the same data and the interval would look exact."""
    known = ~np.isnan(score)
    human = images["human_score"].to_numpy()[known]
    groups = images["source_id"].to_numpy()[known]
    if n_boot == 0:
        return {}
    if len(set(groups)) < 2:
        warnings.warn(
            f"{len(set(groups))} source image(s) in the split: no bootstrap interval (it needs several sources)",
            metrics.MetricWarning,
            stacklevel=2,
        )
        return {}
    return {
        f"{name}_ci": list(metrics.bootstrap_ci(fn, groups, score[known], human, n_boot=n_boot, seed=seed))
        for name, fn in (("srcc", metrics.srcc), ("plcc", metrics.plcc))
    }


def evaluate(data: EvalData, evaluators: Evaluators, n_boot: int = 1000, seed: int = 0) -> dict:
    """The whole metrics.json: overall (+ bootstrap), per task, per family, hallucination, leaderboard, ceiling."""
    images, pairs = data.images, data.pairs
    report: dict = {"split": data.split, "n_images": len(images), "n_pairs": len(pairs), "n_boot": n_boot}
    report["data"] = data.record
    report["overall"] = {
        name: _measure(images, pairs, score) | _bootstrap(images, score, n_boot, seed)
        for name, score in evaluators.scores.items()
    }
    for key, column in GROUPINGS.items():
        report[key] = {}
        for value, group in images.groupby(column, sort=True):
            index = group.index.to_numpy()
            group_pairs = pairs[
                pairs["image_a"].isin(group["image_id"]) & pairs["image_b"].isin(group["image_id"])
            ]
            report[key][str(value)] = {
                name: _measure(group.reset_index(drop=True), group_pairs, score[index])
                for name, score in evaluators.scores.items()
            }
    if evaluators.p_hallucination is not None:
        known = ~np.isnan(images["hallucination"].to_numpy())
        report["hallucination"] = metrics.hallucination_metrics(
            evaluators.p_hallucination[known], images["hallucination"].to_numpy()[known]
        ) | hallucination_detection(images, evaluators.p_hallucination)
    if RESTORATION_STRENGTH in evaluators.scores:
        report["hallucination_rivals"] = {
            RESTORATION_STRENGTH: hallucination_detection(images, evaluators.scores[RESTORATION_STRENGTH])
        }
    report["unseen_restorers"] = _unseen_restorers(images, pairs, evaluators)
    report["leaderboard"] = metrics.leaderboard(
        evaluators.scores, images["model"].to_numpy(), images["human_score"].to_numpy()
    )
    report["human_ceiling"] = metrics.human_ceiling(pairs["votes_a"], pairs["votes_b"], pairs["votes_tie"])
    report["unavailable"] = dict(evaluators.unavailable)
    return report


def _unseen_restorers(images: pd.DataFrame, pairs: pd.DataFrame, evaluators: Evaluators) -> dict:
    """The split's outputs of restoration models that the training split never showed: correlations on those
    outputs, pairwise accuracy on every compared pair with at least one of them, hallucination detection on
    them. Empty (`models: []`) when every model of the split was seen in training."""
    unseen = images["unseen_restorer"].to_numpy(dtype=bool)
    out: dict = {"models": sorted(images.loc[unseen, "model"].unique().tolist())}
    if not unseen.any():
        return out
    new_ids = images.loc[unseen, "image_id"]
    touching = pairs[pairs["image_a"].isin(new_ids) | pairs["image_b"].isin(new_ids)]
    out["n_images"] = int(unseen.sum())
    out["scores"] = {
        name: _measure(images, touching, score, rows=unseen) for name, score in evaluators.scores.items()
    }
    subset = images[unseen].reset_index(drop=True)
    detectors = {"llscore": evaluators.p_hallucination} if evaluators.p_hallucination is not None else {}
    if RESTORATION_STRENGTH in evaluators.scores:
        detectors[RESTORATION_STRENGTH] = evaluators.scores[RESTORATION_STRENGTH]
    out["hallucination"] = {
        name: hallucination_detection(subset, prob[unseen]) for name, prob in detectors.items()
    }
    return out
