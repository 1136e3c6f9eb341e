"""Train/val/test splits by source image, stratified by task, reproducible from a seed.

All restorations of one degraded input land in one split, so an evaluator is never tested on a source it
was trained on. The split is written to `splits.json` and read back by training and evaluation.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from llscore.data.config import SPLITS
from llscore.data.tables import DataError


def allocate(n: int, ratios: dict[str, float]) -> dict[str, int]:
    """Split sizes by largest remainder; every split with a positive ratio gets at least one source."""
    exact = {s: n * ratios[s] for s in SPLITS}
    counts = {s: int(np.floor(x)) for s, x in exact.items()}
    for s in sorted(SPLITS, key=lambda s: counts[s] - exact[s])[: n - sum(counts.values())]:
        counts[s] += 1
    wanted = [s for s in SPLITS if ratios[s] > 0]
    if n < len(wanted):
        raise DataError(f"{n} sources cannot fill the {len(wanted)} non-empty splits of ratios {ratios}")
    for s in wanted:
        if counts[s] == 0:
            counts[s] += 1
            counts[max((x for x in SPLITS if x != s), key=counts.get)] -= 1
    return counts


def make_splits(sources: pd.DataFrame, ratios: dict[str, float], seed: int) -> dict:
    """Assign each source (columns source_id, task) to train/val/test.

    Sources are sorted first, so the split depends only on the set of sources and the seed, not on table
    order. Within each task the sources get a random order and evenly spaced keys (rank + U(0,1)) / n_task;
    cutting the global key order at the ratios gives each task its share (to within one source), and tasks
    with a single source still land in random splits instead of all in train.
    """
    df = (
        sources[["source_id", "task"]].drop_duplicates().sort_values(["task", "source_id"], ignore_index=True)
    )
    rng = np.random.default_rng(seed)
    rank = pd.Series(rng.random(len(df))).groupby(df.task).rank(method="first") - 1
    size = df.groupby("task").source_id.transform("size")
    key = (rank + rng.random(len(df))) / size
    order = df.source_id.to_numpy()[np.argsort(key.to_numpy(), kind="stable")]
    counts = allocate(len(df), ratios)
    bounds = np.cumsum([0] + [counts[s] for s in SPLITS])
    splits = {"seed": seed, "ratios": dict(ratios)}
    splits.update({s: sorted(order[bounds[i] : bounds[i + 1]].tolist()) for i, s in enumerate(SPLITS)})
    check_splits(splits)
    return splits


def check_splits(splits: dict, file: str = "splits.json") -> None:
    """Refuse a split in which any source appears twice (in two splits, or twice in one)."""
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError(f"splits lack {missing}", file=file)
    counts = Counter(sid for s in SPLITS for sid in splits[s])
    twice = sorted(sid for sid, c in counts.items() if c > 1)
    if twice:
        where = {sid: [s for s in SPLITS if sid in splits[s]] for sid in twice[:5]}
        raise DataError(f"{len(twice)} sources appear more than once, e.g. {where}", file=file)


def split_of(source_ids: pd.Series, splits: dict) -> pd.Series:
    """The split name of each source id (NaN for a source in no split)."""
    return source_ids.map({sid: s for s in SPLITS for sid in splits[s]})
