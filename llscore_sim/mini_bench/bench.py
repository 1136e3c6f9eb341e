"""Generate LL-Bench-mini: sources, degradations, restorations, annotator votes and fitted scores, on disk.

Every random draw comes from a numpy Generator keyed by (seed, source index, purpose), so a source does not
change when another one is added and the same seed gives byte-identical files. The bench is written into a
temporary sibling folder and renamed into place at the end, so an interrupted run never leaves half a bench.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from llscore.data import schema
from llscore.data.bradley_terry import fit_bradley_terry
from llscore.data.provenance import BENCH_RECORD

from .annotators import Annotator, Trial, annotator_pool, expected_utility, run_trial
from .degradations import TASKS, degrade, to_uint8
from .perception import perceive
from .restorers import MODELS, Restoration, clean_fidelity, restore
from .sources import random_crop, sample_scene

N_TRIALS = 5  # trials (one annotator each) per source


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass
class _Tables:
    images: list
    truth: list
    pairs: list
    rankings: list
    hallucination: list


def _save(root: Path, relative: str, image: np.ndarray) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)


@dataclass(frozen=True)
class SourceDraw:
    """One simulated source: its photograph, clean crop, degraded input and every model's restoration."""

    source_id: str
    task: str
    scene: str
    clean: np.ndarray
    degraded: np.ndarray
    restorations: tuple[Restoration, ...]


def draw_source(index: int, seed: int, size: int, width: int) -> SourceDraw:
    """Source `index`: a clean crop of a random photograph, its degradation, then every model's restoration."""
    task = TASKS[index % len(TASKS)]
    rng = _rng(seed, 0, index, 0)
    scene, clean = sample_scene(rng, size)
    degraded = degrade(clean, task, rng.uniform(0.3, 1.0), rng)

    def donor(rng, size):
        return random_crop(scene, rng, size)

    restorations = tuple(
        restore(model, clean, degraded, task, donor, _rng(seed, 0, index, 1, k))
        for k, model in enumerate(MODELS)
    )
    return SourceDraw(f"src{index:0{width}d}", task, scene, clean, degraded, restorations)


def annotate(
    draw: SourceDraw, pool, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[Annotator, Trial]]]:
    """The pool's expected utility of each restoration and `N_TRIALS` annotated trials of the source.

    Only what LL-Bench's annotators are shown enters: the degraded input and the restorations (with where
    their content is unsupported). `draw.clean` is never read here.
    """
    perceptions = perceive(
        draw.degraded,
        np.stack([r.image for r in draw.restorations]),
        np.stack([r.mask for r in draw.restorations]),
    )
    trials = [
        (pool[a], run_trial(pool[a], perceptions, rng))
        for a in rng.choice(len(pool), N_TRIALS, replace=False)
    ]
    return expected_utility(perceptions, pool), trials


def _record_source(root: Path, index: int, seed: int, size: int, width: int, pool) -> _Tables:
    """Draw source `index`, save its images under `root` and return its rows (images, votes, rankings, labels,
    ground truth). Independent of every other source, so sources can be made in parallel."""
    draw = draw_source(index, seed, size, width)
    tables = _Tables([], [], [], [], [])
    source_id, task = draw.source_id, draw.task
    for kind, image in (("degraded", draw.degraded), ("reference", draw.clean)):
        path = f"images/{source_id}/{kind}.png"
        _save(root, path, image)
        tables.images.append((f"{source_id}_{kind}", path, kind, source_id, task, "", "", draw.scene))
    ids = []
    for model, restoration in zip(MODELS, draw.restorations, strict=True):
        image_id, path = f"{source_id}_{model.name}", f"images/{source_id}/{model.name}.png"
        _save(root, path, restoration.image)
        tables.images.append(
            (image_id, path, "restored", source_id, task, model.name, model.family, draw.scene)
        )
        ids.append(image_id)

    utility, trials = annotate(draw, pool, _rng(seed, 0, index, 2))
    for image_id, value, restoration in zip(ids, utility, draw.restorations, strict=True):
        fidelity = clean_fidelity(restoration, draw.clean)
        tables.truth.append((image_id, value, int(bool(restoration.hallucination)), fidelity))
    flags = np.zeros(len(ids))
    for t, (annotator, trial) in enumerate(trials):
        trial_id = f"{source_id}_t{t}"
        tables.pairs += [
            (source_id, ids[i], ids[j], p, annotator.annotator_id, trial_id) for i, j, p in trial.pairs
        ]
        ranking = schema.RANKING_SEPARATOR.join(ids[i] for i in trial.ranking)
        tables.rankings.append((trial_id, source_id, annotator.annotator_id, ranking))
        flags += trial.flags
    tables.hallucination += [
        (image_id, f / N_TRIALS, N_TRIALS) for image_id, f in zip(ids, flags, strict=True)
    ]
    return tables


def _scores(pairs: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Bradley–Terry scores fitted from the votes alone, zero-mean within each source (the gauge)."""
    restored = images[images["kind"] == "restored"]
    index = pd.Series(np.arange(len(restored)), index=restored["image_id"])
    a, b = index[pairs["image_a"]].to_numpy(), index[pairs["image_b"]].to_numpy()
    outcome = pairs["preference"].map({"a": 1.0, "b": 0.0, "tie": 0.5}).to_numpy()
    score, std = fit_bradley_terry(a, b, outcome, len(restored), groups=restored["source_id"].to_numpy())
    n = np.bincount(a, minlength=len(restored)) + np.bincount(b, minlength=len(restored))
    return pd.DataFrame({"image_id": restored["image_id"], "score": score, "std": std, "n_comparisons": n})


def _write_tables(root: Path, tables: _Tables) -> None:
    def table(rows, columns, by="image_id"):
        return pd.DataFrame(rows, columns=columns).sort_values(by, kind="stable", ignore_index=True)

    frames = {
        schema.IMAGES: table(tables.images, schema.COLUMNS[schema.IMAGES]),
        schema.PAIRS: table(tables.pairs, schema.COLUMNS[schema.PAIRS], ["trial_id", "image_a", "image_b"]),
        schema.RANKINGS: table(tables.rankings, schema.COLUMNS[schema.RANKINGS], "trial_id"),
        schema.HALLUCINATION: table(tables.hallucination, schema.COLUMNS[schema.HALLUCINATION]),
        schema.GROUND_TRUTH: table(tables.truth, schema.GROUND_TRUTH_COLUMNS),
    }
    frames[schema.SCORES] = _scores(frames[schema.PAIRS], frames[schema.IMAGES])
    for name, frame in frames.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")


def make_mini_bench(
    out: str | Path,
    seed: int = 0,
    n_sources: int = 80,
    overwrite: bool = False,
    image_size: int = 112,
    workers: int | None = None,
) -> Path:
    """Generate LL-Bench-mini into `out` (LL-Bench's layout, docs/llbench_mini.md) and return `out`.

    Sources are stratified by task (source i has task i mod 16), each restored by every model in `MODELS`.
    They are made by `workers` processes (default: one per CPU core); the files do not depend on how many.
    A non-empty `out` is only replaced with `overwrite=True`.
    """
    out = Path(out)
    if n_sources < 1:
        raise ValueError(f"n_sources must be at least 1, got {n_sources}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite on the command line) to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        pool = annotator_pool(_rng(seed, 1))
        tables = _Tables([], [], [], [], [])
        make = partial(
            _record_source, tmp, seed=seed, size=image_size, width=max(3, len(str(n_sources - 1))), pool=pool
        )
        with ProcessPoolExecutor(workers or os.cpu_count() or 1) as executor:
            done = executor.map(make, range(n_sources), chunksize=8)
            for part in tqdm(done, total=n_sources, desc="LL-Bench-mini", unit="source"):
                for name, rows in vars(part).items():
                    getattr(tables, name).extend(rows)
        _write_tables(tmp, tables)
        record = {
            "name": "LL-Bench-mini",
            "generator": "data_prep/make_mini_bench.py (docs/llbench_mini.md)",
            "seed": seed,
            "n_sources": n_sources,
            "image_size": image_size,
        }
        (tmp / BENCH_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            (shutil.rmtree if old.is_dir() and not old.is_symlink() else Path.unlink)(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
