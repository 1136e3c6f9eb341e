"""Build a prepared dataset from an LL-Bench directory: validate, split by source, build samples, write.

Layout of the output directory (all image paths inside are absolute paths into the bench):
  splits.json          {"seed", "ratios", "train": [source ids], "val": [...], "test": [...]}
  normalisation.json   how raw quality scores map to [1, 5] and back (`samples.Normalisation`) + soft-target rule
  quality/ pairs/ hallucination/   `datasets.DatasetDict` (train/val/test) saved with `save_to_disk`
  preview/*.jsonl      the first rows of each split, for a quick look
  stats.md             counts, label balance, human-human agreement
  report.json          counts, skipped images/rows with reasons, duplicate rows, timings, the config used
Everything is written into a temporary sibling directory, loaded back with `load_prepared`, and only then
renamed into place, so a failure leaves an existing output untouched and never leaves a half-written or
unloadable one. A non-empty output folder is replaced only with `overwrite=True`, and only when everything in
it is a prepared dataset's own (`prepared.ENTRIES`): a user's other files are never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from llscore import metrics
from llscore.data.column_map import check_column_map
from llscore.data.config import SPLITS, DataConfig
from llscore.data.prepared import ENTRIES, SAMPLE_SETS, load_prepared
from llscore.data.provenance import bench_record
from llscore.data.samples import hallucination_samples, pair_samples, quality_samples
from llscore.data.splits import hold_out_models, make_splits, split_of
from llscore.data.tables import load_bench
from llscore.errors import DataError
from llscore.files import json_default
from llscore.markdown import markdown_table
from llscore.prompts import PromptContract

_S, _F, _I = datasets.Value("string"), datasets.Value("float64"), datasets.Value("int64")
FEATURES = {
    "quality": datasets.Features(
        {
            **dict.fromkeys(("image_id", "source_id", "degraded", "restored", "reference"), _S),
            "score": _F,
            "std": _F,
            "soft_target": datasets.List(_F),
            **dict.fromkeys(("task", "model", "model_family"), _S),
        }
    ),
    "pairs": datasets.Features(
        {
            **dict.fromkeys(
                ("source_id", "task", "degraded", "image_a", "image_b", "restored_a", "restored_b"), _S
            ),
            "p_a_better": _F,
            "n_votes": _I,
            "majority": _S,
            **dict.fromkeys(("votes_a", "votes_b", "votes_tie"), _I),
        }
    ),
    "hallucination": datasets.Features(
        {
            **dict.fromkeys(
                ("image_id", "source_id", "task", "model", "model_family", "degraded", "restored"), _S
            ),
            "label": _F,
            "n_votes": _I,
        }
    ),
}
assert tuple(FEATURES) == SAMPLE_SETS


def _human_ceiling(pairs: pd.DataFrame) -> dict:
    return metrics.human_ceiling(pairs["votes_a"], pairs["votes_b"], pairs["votes_tie"])


def build_dataset(
    bench_dir: str | Path,
    out_dir: str | Path,
    config: DataConfig | None = None,
    on_bad_image: str = "error",
    on_bad_row: str = "error",
    overwrite: bool = False,
) -> Path:
    """Validate the bench at `bench_dir` and write a prepared dataset to `out_dir`; returns its path.

    Columns the data config names but the tables lack stop it with a proposed column map (`ColumnMapError`).
    `on_bad_image` / `on_bad_row` ("error" or "skip") decide whether a missing or undecodable image file / an
    unusable annotation row stops the build with a `DataError` or is left out and listed in report.json
    (`llscore.data.tables`). The split is made by `make_splits`, which refuses a source in two splits.
    A non-empty `out_dir` is replaced only with `overwrite` and only if it holds nothing but a prepared dataset.
    """
    config = config or DataConfig()
    out = Path(out_dir).resolve()
    check_replaceable(out, overwrite)
    check_column_map(bench_dir, config)
    start = time.perf_counter()
    bench = load_bench(bench_dir, config, on_bad_image=on_bad_image, on_bad_row=on_bad_row)
    timings = dict(bench.timings)

    clock = time.perf_counter()
    contract = PromptContract()
    quality, norm = quality_samples(
        bench, contract, config.min_std, config.default_std, config.files["scores"]
    )
    pairs = pair_samples(bench)
    scored = pairs.image_a.isin(quality.image_id) & pairs.image_b.isin(quality.image_id)
    frames = {
        "quality": quality,
        "pairs": pairs[scored].reset_index(drop=True),
        "hallucination": hallucination_samples(bench),
    }
    splits = make_splits(bench.sources.rename_axis("source_id").reset_index(), config.ratios, config.seed)
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        raise DataError(
            f"split(s) {empty} would be empty ({len(bench.sources)} sources, ratios {dict(config.ratios)}); "
            "training validates on 'val' and evaluation reads 'test', so give each a positive ratio"
        )
    for frame in frames.values():
        frame["split"] = split_of(frame.source_id, splits)
    if config.holdout_models:
        model_of = bench.images.set_index("image_id")["model"]
        known = sorted(set(model_of.dropna()) - {""})
        unknown = sorted(set(config.holdout_models) - set(known))
        if unknown:
            raise DataError(
                f"holdout_models names model(s) {unknown} that the bench lacks; its models: {known}"
            )
        for name, frame in frames.items():
            models = (
                [frame.image_a.map(model_of), frame.image_b.map(model_of)] if name == "pairs" else frame.model
            )
            frame["split"] = hold_out_models(frame["split"], models, config.holdout_models)
        splits["holdout_models"] = list(config.holdout_models)
    timings["build_samples_and_splits"] = time.perf_counter() - clock

    clock = time.perf_counter()
    normalisation = {
        **norm.to_dict(),
        "std": {"min_std": config.min_std, "default_std": config.default_std},
        "soft_target": "discretised Gaussian over the level weights, centre shifted so its mean equals the score",
        "level_words": list(contract.level_words),
        "level_weights": list(contract.level_weights),
    }
    report = _report(bench, frames, splits, config, on_bad_image, on_bad_row, int((~scored).sum()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        quiet = datasets.utils.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # nine "Saving the dataset" bars would bury the report
        try:
            for name, frame in frames.items():
                # one shard per split: an empty split saved with none would not load back
                _dataset_dict(frame, FEATURES[name]).save_to_disk(
                    str(tmp / name), num_shards=dict.fromkeys(SPLITS, 1)
                )
        finally:
            if not quiet:
                datasets.enable_progress_bars()
        _write_preview(tmp / "preview", frames, config.preview_rows)
        _write_json(tmp / "splits.json", splits)
        _write_json(tmp / "normalisation.json", normalisation)
        (tmp / "stats.md").write_text(_stats_markdown(bench, frames, splits, report))
        timings["write"] = time.perf_counter() - clock
        timings["total"] = time.perf_counter() - start
        _write_json(tmp / "report.json", {**report, "timings": timings})
        load_prepared(tmp)
        _set_default_mode(tmp)
        check_replaceable(out, overwrite)  # again: the folder may have changed while the build ran
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, a non-empty folder without `overwrite`, a folder holding anything that a
    build did not write (it would be deleted with the old dataset), or one that does not load as a prepared
    dataset."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; --out must name a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ENTRIES)
    if foreign:
        raise DataError(
            f"{out} holds files that are not part of a prepared dataset ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); refusing to replace it: choose another --out"
        )
    if not overwrite:
        raise DataError(f"{out} already holds a prepared dataset; pass --overwrite to rebuild it")
    try:
        load_prepared(out)
    except DataError as err:
        raise DataError(f"{out} is not a complete prepared dataset ({err}); refusing to replace it") from err


def _set_default_mode(folder: Path) -> None:
    """`mkdtemp` makes the folder private (0700); the dataset gets the mode any new folder gets here."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


def _replace(tmp: Path, out: Path) -> None:
    """Move `tmp` to `out`; an existing `out` is moved aside first and removed only once the new one is in place."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _dataset_dict(frame: pd.DataFrame, features: datasets.Features) -> datasets.DatasetDict:
    columns = list(features)
    out = {}
    for split in SPLITS:
        part = frame.loc[frame.split == split, columns]
        data = {c: part[c].tolist() for c in columns}
        if "soft_target" in data:
            data["soft_target"] = [np.asarray(v, dtype=float).tolist() for v in data["soft_target"]]
        out[split] = datasets.Dataset.from_dict(data, features=features)
    return datasets.DatasetDict(out)


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=json_default) + "\n")


def _write_preview(folder: Path, frames: dict[str, pd.DataFrame], rows: int) -> None:
    folder.mkdir()
    for name, frame in frames.items():
        head = frame.groupby("split", sort=False).head(rows)
        lines = [json.dumps(r, default=json_default) for r in head.to_dict("records")]
        (folder / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))


def _report(
    bench,
    frames: dict[str, pd.DataFrame],
    splits: dict,
    config: DataConfig,
    on_bad_image,
    on_bad_row,
    unscored_pairs: int,
) -> dict:
    """report.json; `unscored_pairs` counts compared pairs left out because an image of theirs has no quality
    score (its score row or its file was skipped), so that training and evaluation see consistent samples."""
    by_split = {
        name: frame.split.value_counts().reindex(list(SPLITS), fill_value=0) for name, frame in frames.items()
    }
    pairs = frames["pairs"]
    skipped_where = pd.Series([f"{r['file']} [{r['column']}]" for r in bench.skipped_rows], dtype=object)
    return {
        "bench": str(bench.root),
        "provenance": bench_record(bench.root, config),
        "absent_tables": list(bench.absent),
        "on_bad_image": on_bad_image,
        "on_bad_row": on_bad_row,
        "rows_read": bench.rows_read,
        "counts": {
            "images": len(bench.images),
            "sources": len(bench.sources),
            "sources_per_split": {s: len(splits[s]) for s in SPLITS},
            **{name: {s: int(n) for s, n in counts.items()} for name, counts in by_split.items()},
            "pair_votes": {s: int(pairs.n_votes[pairs.split == s].sum()) for s in SPLITS},
            "scores_not_of_restorations": len(bench.scores) - len(frames["quality"]),
            "rankings": len(bench.rankings),
        },
        "skipped": {
            "images": len(bench.skipped_images),
            "rows": len(bench.skipped_rows),
            "rows_by_column": {k: int(v) for k, v in skipped_where.value_counts().items()},
            "duplicate_rows": len(bench.duplicates),
            "pairs_without_scores": unscored_pairs,
        },
        "human_agreement": {
            "all": _human_ceiling(pairs),
            **{s: _human_ceiling(pairs[pairs.split == s]) for s in SPLITS},
        },
        "skipped_images": bench.skipped_images,
        "skipped_rows": bench.skipped_rows,
        "duplicate_rows": bench.duplicates,
        "config": config.to_dict(),
    }


def _stats_markdown(bench, frames: dict[str, pd.DataFrame], splits: dict, report: dict) -> str:
    q, p, h = frames["quality"], frames["pairs"], frames["hallucination"]
    counts = report["counts"]
    split_table = pd.DataFrame(
        {
            "quality": counts["quality"],
            "pairs": counts["pairs"],
            "pair votes": counts["pair_votes"],
            "hallucination": counts["hallucination"],
        }
    ).rename_axis("split")
    sources = bench.sources.assign(split=split_of(bench.sources.index.to_series(), splits))
    task_table = pd.crosstab(sources.task, sources.split).reindex(columns=list(SPLITS), fill_value=0)
    task_table = task_table.add_prefix("sources ").assign(
        quality=q.task.value_counts(), pairs=p.task.value_counts(), hallucination=h.task.value_counts()
    )
    model_table = q.groupby(["model_family", "model"]).agg(
        quality=("score", "size"), mean_score=("score", "mean")
    )
    model_table = model_table.join(
        h.groupby(["model_family", "model"]).agg(
            hallucination=("label", "size"), mean_label=("label", "mean")
        )
    )
    family_table = pd.crosstab(q.model_family, q.split).reindex(columns=list(SPLITS), fill_value=0)
    family_table = family_table.add_prefix("quality ").assign(
        mean_score=q.groupby("model_family").score.mean(),
        mean_hallucination=h.groupby("model_family").label.mean(),
    )
    majority = pd.crosstab(p.split, p.majority).reindex(
        index=list(SPLITS), columns=["a", "b", "tie"], fill_value=0
    )
    halluc = (
        h.assign(hallucinated=h.label >= 0.5)
        .groupby("split")
        .agg(labelled=("label", "size"), hallucinated=("hallucinated", "sum"), mean_label=("label", "mean"))
        .reindex(list(SPLITS))
    )
    levels = pd.crosstab(q.split, np.rint(q.score).astype(int).rename("level")).reindex(
        index=list(SPLITS), fill_value=0
    )
    agreement = pd.DataFrame.from_dict(report["human_agreement"], orient="index").rename_axis("split")
    skipped = report["skipped"]
    return "\n".join(
        [
            "# Prepared LL-Bench: statistics\n",
            f"Bench: `{report['bench']}` — {counts['images']} images, {counts['sources']} sources.\n",
            *(
                [f"Absent (optional) tables: {', '.join(bench.absent)}; their metrics are skipped.\n"]
                if bench.absent
                else []
            ),
            "## Per split\n",
            markdown_table(split_table.fillna(0).astype(int), index=True) + "\n",
            "## Per task\n",
            markdown_table(task_table.fillna(0).astype(int), index=True) + "\n",
            "## Per model\n",
            markdown_table(model_table, index=True) + "\n",
            "## Per model family\n",
            markdown_table(family_table, index=True) + "\n",
            "## Label balance\n",
            "Pair majority (plurality of a / b / tie votes):\n",
            markdown_table(majority, index=True) + "\n",
            "Hallucination (hallucinated = label >= 0.5):\n",
            markdown_table(halluc, index=True) + "\n",
            "Quality scores by nearest level (1 = bad ... 5 = excellent):\n",
            markdown_table(levels, index=True) + "\n",
            "## Human–human agreement on pairs\n",
            "`loo_agreement` (each vote against the majority of the other votes on its pair) is the ceiling for "
            "any evaluator's pairwise accuracy against the majority label.\n",
            markdown_table(agreement, index=True) + "\n",
            "## Skipped\n",
            f"{skipped['images']} images, {skipped['rows']} rows, {skipped['duplicate_rows']} exact duplicate rows "
            "(details in report.json).\n",
        ]
    )
