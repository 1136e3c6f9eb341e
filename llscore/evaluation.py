"""The evaluation protocol of docs/evaluation.md: LL-Score and the baselines against humans on one split.

Every evaluator ("llscore" and each baseline column) is measured the same way: correlations overall, per task
and per model family, within-source SRCC, pairwise accuracy against the human majority of each pair and
agreement with the individual votes, a restoration-model leaderboard, and bootstrap intervals over source
images. Hallucination metrics apply to LL-Score's P(hallucination). A dataset that lacks what a metric needs
(no pairs table, no hallucination labels, no training split: `EvalData.absent`) has that metric skipped, and
the report lists what was skipped and why (`skipped_metrics`).
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
from llscore.data.adapters import ScoredDataset
from llscore.data.prepared import PreparedData, load_prepared
from llscore.data.provenance import split_record
from llscore.errors import CheckpointError, ConfigError, DataError, EvaluationError
from llscore.rivals import RESTORATION_STRENGTH, RESTORER_PRIOR, restoration_strength, restorer_prior
from llscore.runtime import RuntimeOptions

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
    absent: dict[str, str] = field(default_factory=dict)
    """What the dataset lacks, with why: `pairs`, `hallucination` (tables a bench may lack) and `train` (a dataset
    evaluated whole, with no training split); the metrics that need them are skipped (`skipped_metrics`)."""
    full_reference: bool = False
    """The input shown beside each image is its clean reference (a full-reference dataset such as PIPAL or
    KADID-10k, docs/data_contract.md), not a degraded input."""


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
    files = prepared.report.get("config", {}).get("files", {})
    absent = {
        table: f"the bench has no {files.get(table, table)}"
        for table in prepared.report.get("absent_tables", [])
    }
    return EvalData(
        images.reset_index(drop=True), pairs.reset_index(drop=True), split, prepared.path, record, absent
    )


PAIR_COLUMNS = ("image_a", "image_b", "p_a_better", "n_votes", "majority", "votes_a", "votes_b", "votes_tie")
"""The columns of compared pairs that the protocol reads (a prepared dataset's `pairs`)."""


def dataset_eval_data(dataset: ScoredDataset) -> EvalData:
    """A dataset read through its adapter (`llscore.data.adapters`), evaluated whole (split `all`): the
    cross-dataset protocol, where a model trained on one dataset is measured on every image of another."""
    images = dataset.images.rename(columns={"score": "human_score"}).reset_index(drop=True)
    labels = (
        dataset.hallucination.set_index("image_id")["label"]
        if dataset.hallucination is not None
        else pd.Series(dtype=float)
    )
    images["hallucination"] = labels.reindex(images["image_id"]).to_numpy(dtype=float)
    images[RESTORER_PRIOR] = np.nan  # no training split to take a restorer's mean from
    images["unseen_restorer"] = False
    pairs = dataset.pairs if dataset.pairs is not None else pd.DataFrame(columns=list(PAIR_COLUMNS))
    pairs = pairs[pairs["image_a"].isin(images["image_id"]) & pairs["image_b"].isin(images["image_id"])]
    record = {
        "name": dataset.name,
        "local_path": str(dataset.root),
        "split": "all",
        "sources": int(images["source_id"].nunique()),
        "restored_images": len(images),
        "pairs": len(pairs),
        "pair_votes": int(pairs["n_votes"].sum()) if len(pairs) else 0,
        "hallucination_labels": int(images["hallucination"].notna().sum()),
        "images_scored": len(images),
    }
    absent = dataset.absent | {"train": f"{dataset.name} is evaluated whole, with no training split"}
    return EvalData(
        images, pairs.reset_index(drop=True), "all", dataset.root, record, absent, dataset.full_reference
    )


def skipped_metrics(data: EvalData) -> dict[str, str]:
    """The metrics this data cannot give, each with why (metrics.json's and report.md's `skipped`)."""
    out = {}
    if "pairs" in data.absent:
        out["pairwise"] = (
            f"{data.absent['pairs']}: pairwise accuracy, vote agreement and the human-human ceiling need compared "
            "pairs"
        )
    if "hallucination" in data.absent:
        out["hallucination"] = (
            f"{data.absent['hallucination']}: hallucination AUROC, AP, F1 and ECE need hallucination labels"
        )
    if "train" in data.absent:
        out[RESTORER_PRIOR] = f"{data.absent['train']}: the restorer prior is a mean over the training split"
        out["unseen_restorers"] = f"{data.absent['train']}: no restorer was seen or unseen in training"
    if data.full_reference:
        out[RESTORATION_STRENGTH] = (
            "the input is the clean reference: distance from it is fidelity, which the full-reference baselines "
            "measure (m@ref)"
        )
    if not (data.images["model_family"].astype(str) != "").any():
        out["per_family"] = "the dataset names no model families"
    return out


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
    options: RuntimeOptions,
    zero_shot: bool = False,
) -> pd.DataFrame:
    """`score_split` with a checkpoint run as `options` say (`zero_shot`: a base model without
    llscore_config.json is scored with the default prompt contract)."""
    try:
        scorer = LLScore.from_pretrained(
            ckpt, dtype=options.dtype, device=options.device, zero_shot=zero_shot, backend=options.backend
        )
    except (CheckpointError, OSError) as err:
        raise EvaluationError(f"cannot load checkpoint {ckpt}: {err}") from err
    return score_split(scorer, images, batch_size, workers=options.workers)


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
    """The trivial rivals' scores (`llscore.rivals`), aligned with `data.images`; those the data cannot give
    (`skipped_metrics`) are left out."""
    images, skipped = data.images, skipped_metrics(data)
    out = {}
    if RESTORATION_STRENGTH not in skipped:
        out[RESTORATION_STRENGTH] = restoration_strength(
            images["restored"].tolist(), images["degraded"].tolist(), progress
        )
    if RESTORER_PRIOR not in skipped:
        out[RESTORER_PRIOR] = images[RESTORER_PRIOR].to_numpy(dtype=float)
    return out


def rival_metrics(data: EvalData, progress: bool = True) -> dict[str, dict[str, float]]:
    """What the trivial rivals reach on a split, measured as `llscore_metrics` measures LL-Score (printed and
    saved beside the in-training validation)."""
    scores = rival_scores(data, progress)
    out = {}
    for name, score in scores.items():
        measured = _measure(data.images, data.pairs, score)
        out[name] = {key: float(measured.get(key, np.nan)) for key in VALIDATION_METRICS}
    if RESTORATION_STRENGTH in scores:
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
    """The whole metrics.json: overall (+ bootstrap), per task, per family, hallucination, leaderboard, ceiling;
    `skipped` names what the data cannot give (`skipped_metrics`), and those parts are left out."""
    images, pairs = data.images, data.pairs
    skipped = skipped_metrics(data)
    report: dict = {"split": data.split, "n_images": len(images), "n_pairs": len(pairs), "n_boot": n_boot}
    report["data"] = data.record
    if data.full_reference:
        report["full_reference"] = True
    report["overall"] = {
        name: _measure(images, pairs, score) | _bootstrap(images, score, n_boot, seed)
        for name, score in evaluators.scores.items()
    }
    for key, column in GROUPINGS.items():
        if key in skipped:
            continue
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
    labelled = "hallucination" not in skipped
    if evaluators.p_hallucination is not None and labelled:
        known = ~np.isnan(images["hallucination"].to_numpy())
        report["hallucination"] = metrics.hallucination_metrics(
            evaluators.p_hallucination[known], images["hallucination"].to_numpy()[known]
        ) | hallucination_detection(images, evaluators.p_hallucination)
    if RESTORATION_STRENGTH in evaluators.scores and labelled:
        report["hallucination_rivals"] = {
            RESTORATION_STRENGTH: hallucination_detection(images, evaluators.scores[RESTORATION_STRENGTH])
        }
    if "unseen_restorers" not in skipped:
        report["unseen_restorers"] = _unseen_restorers(images, pairs, evaluators)
    report["leaderboard"] = metrics.leaderboard(
        evaluators.scores, images["model"].to_numpy(), images["human_score"].to_numpy()
    )
    if "pairwise" not in skipped:
        report["human_ceiling"] = metrics.human_ceiling(
            pairs["votes_a"], pairs["votes_b"], pairs["votes_tie"]
        )
    report["unavailable"] = dict(evaluators.unavailable)
    report["skipped"] = skipped
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
