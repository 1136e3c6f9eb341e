"""Train/val/test splits by source image (and by scene when the bench names one), reproducible from a seed.

All restorations of one degraded input land in one split, so an evaluator is never tested on a source it
was trained on. When the images table has a `scene` column (the photograph a source was cut from), all
sources of a scene land in one split too: crops of one photograph share content, so a test crop of a
training photograph would not be held out. The split is written to `splits.json` and read back by
training and evaluation.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from llscore.data.config import SPLITS
from llscore.errors import DataError


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
    """Assign each source (columns source_id, task, optional scene) to train/val/test.

    Without scenes, sources are stratified by task: sorted first, so the split depends only on the set of
    sources and the seed, not on table order; within each task the sources get a random order and evenly
    spaced keys (rank + U(0,1)) / n_task; cutting the global key order at the ratios gives each task its share
    (to within one source), and tasks with a single source still land in random splits instead of all in train.
    With scenes, whole scenes are assigned (`_assign_scenes`) and splits.json lists them too.
    """
    if "scene" in sources and (sources["scene"].fillna("") != "").any():
        return _assign_scenes(sources, ratios, seed)
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


def _assign_scenes(sources: pd.DataFrame, ratios: dict[str, float], seed: int) -> dict:
    """Whole scenes to splits: a source without a scene is a scene of its own.

    Scenes are sorted, shuffled by the seed, and each non-empty split first takes one scene (smallest ratio
    first, so a small split is not starved by a large scene); every other scene then goes to the split
    furthest below its share of sources.
    """
    df = sources[["source_id", "scene"]].drop_duplicates().fillna("")
    df["scene"] = df["scene"].where(df["scene"] != "", "source:" + df["source_id"])
    size = df.groupby("scene").size().sort_index()
    wanted = sorted((s for s in SPLITS if ratios[s] > 0), key=lambda s: ratios[s])
    if len(size) < len(wanted):
        raise DataError(
            f"{len(size)} scene(s) cannot fill the {len(wanted)} non-empty splits of ratios {ratios}"
        )
    order = size.index.to_numpy()[np.random.default_rng(seed).permutation(len(size))]
    target = {s: ratios[s] * len(df) for s in SPLITS}
    scenes: dict[str, list[str]] = {s: [] for s in SPLITS}
    count = dict.fromkeys(SPLITS, 0)
    for k, scene in enumerate(order):
        split = (
            wanted[k] if k < len(wanted) else max(wanted, key=lambda s: (target[s] - count[s]) / target[s])
        )
        scenes[split].append(str(scene))
        count[split] += int(size[scene])
    members = df.groupby("scene")["source_id"].apply(list)
    splits = {"seed": seed, "ratios": dict(ratios)}
    splits.update({s: sorted(sid for scene in scenes[s] for sid in members[scene]) for s in SPLITS})
    splits["scenes"] = {s: sorted(scenes[s]) for s in SPLITS}
    check_splits(splits)
    return splits


def check_splits(splits: dict, file: str = "splits.json") -> None:
    """Refuse a split in which any source (or listed scene) appears twice (in two splits, or twice in one)."""
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        raise DataError(f"splits lack {missing}", file=file)
    for what, members in (("sources", splits), ("scenes", splits.get("scenes", {}))):
        counts = Counter(item for s in SPLITS for item in members.get(s, ()))
        twice = sorted(item for item, c in counts.items() if c > 1)
        if twice:
            where = {item: [s for s in SPLITS if item in members.get(s, ())] for item in twice[:5]}
            raise DataError(f"{len(twice)} {what} appear more than once, e.g. {where}", file=file)


def hold_out_models(split: pd.Series, models: pd.Series | list[pd.Series], held_out: list[str]) -> pd.Series:
    """`split` with the rows of held-out restoration models taken out of train and val (NaN: in no split);
    test keeps them. `models` is the row's model, or for a pair the models of its two images (held out when
    either is)."""
    columns = models if isinstance(models, list) else [models]
    made_by_held_out = np.logical_or.reduce([m.isin(held_out).to_numpy() for m in columns])
    return split.where(~(made_by_held_out & split.isin(["train", "val"]).to_numpy()))


def split_of(source_ids: pd.Series, splits: dict) -> pd.Series:
    """The split name of each source id (NaN for a source in no split)."""
    return source_ids.map({sid: s for s in SPLITS for sid in splits[s]})
