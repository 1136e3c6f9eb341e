"""Time `build_dataset` on synthetic LL-Bench tables of the real release's size, and at fractions of it.

    python bench/bench_dataprep.py [--scales 0.25 0.5 1] [--workers 8]

The real release has 2,469 sources, 28,919 restorations, 28,334 quality scores and 152,020 preference rows.
The synthetic bench has those counts (times the scale) and one tiny PNG hard-linked under every image path,
so the image check costs what opening 29k files costs but no real decoding. The table part (reading,
validation, samples, splits, writing) must grow linearly with rows: the per-row column should stay flat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from llscore.data import schema
from llscore.data.build import build_dataset
from llscore.data.config import DataConfig

REAL = {"sources": 2469, "restorations": 28919, "scores": 28334, "pairs": 152020}
TASKS = [f"task{i:02d}" for i in range(16)]
MODELS = [(f"lgm{i}", "lgm") for i in range(10)] + [(f"conv{i}", "conventional") for i in range(21)]
TRIALS_PER_SOURCE = 5


def make_synthetic_bench(root: Path, scale: float = 1.0, seed: int = 0) -> dict[str, int]:
    """Write the five tables and image files of a synthetic bench of `scale` times the real size."""
    rng = np.random.default_rng(seed)
    n_src = max(2, round(REAL["sources"] * scale))
    n_res = max(2 * n_src, round(REAL["restorations"] * scale))
    per = np.diff(np.linspace(0, n_res, n_src + 1).round().astype(int))  # 11-12 restorations per source
    src = np.repeat(np.arange(n_src), per)
    k = np.arange(n_res) - np.repeat(np.cumsum(per) - per, per)  # index within the source
    model = (k + src) % len(MODELS)
    sources = np.array([f"s{i:05d}" for i in range(n_src)], dtype=object)
    res_ids = sources[src] + np.array([f"_r{j:02d}" for j in k], dtype=object)
    images = pd.DataFrame(
        {
            "image_id": np.concatenate([sources + "_deg", res_ids]),
            "path": np.concatenate(
                [sources + "/deg.png", sources[src] + np.array([f"/r{j:02d}.png" for j in k])]
            ),
            "kind": ["degraded"] * n_src + ["restored"] * n_res,
            "source_id": np.concatenate([sources, sources[src]]),
            "task": np.array(TASKS, dtype=object)[np.concatenate([np.arange(n_src), src]) % len(TASKS)],
            "model": [""] * n_src + [MODELS[m][0] for m in model],
            "model_family": [""] * n_src + [MODELS[m][1] for m in model],
        }
    )
    n_pairs = round(REAL["pairs"] * scale)
    ps = rng.integers(n_src, size=n_pairs)
    i = rng.integers(per[ps])
    j = (i + 1 + rng.integers(per[ps] - 1)) % per[ps]
    offset = np.cumsum(per) - per
    trial = rng.integers(TRIALS_PER_SOURCE, size=n_pairs)
    pairs = pd.DataFrame(
        {
            "source_id": sources[ps],
            "image_a": res_ids[offset[ps] + i],
            "image_b": res_ids[offset[ps] + j],
            "preference": rng.choice(["a", "b", "tie"], size=n_pairs, p=[0.45, 0.45, 0.1]),
            "annotator_id": [f"ann{a:03d}" for a in rng.integers(200, size=n_pairs)],
            "trial_id": sources[ps] + np.array([f"_t{t}" for t in trial], dtype=object),
        }
    )
    scored = rng.choice(n_res, size=min(n_res, round(REAL["scores"] * scale)), replace=False)
    scores = pd.DataFrame(
        {
            "image_id": res_ids[scored],
            "score": rng.normal(size=len(scored)),
            "std": rng.uniform(0.1, 0.6, size=len(scored)),
            "n_comparisons": rng.integers(5, 60, size=len(scored)),
        }
    )
    hallucination = pd.DataFrame(
        {"image_id": res_ids, "hallucination": rng.integers(0, 6, n_res) / 5, "n_votes": 5}
    )
    by_source = pd.Series(res_ids).groupby(src).agg(list)
    rankings = pd.DataFrame(
        [
            (f"{sources[s]}_t{t}", sources[s], f"ann{t:03d}", ">".join(rng.permutation(by_source[s])))
            for s in range(n_src)
            for t in range(TRIALS_PER_SOURCE)
        ],
        columns=schema.COLUMNS[schema.RANKINGS],
    )
    for name, frame in {
        schema.IMAGES: images,
        schema.PAIRS: pairs,
        schema.SCORES: scores,
        schema.HALLUCINATION: hallucination,
        schema.RANKINGS: rankings,
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(root / name, index=False)
    png = root / "tiny.png"
    Image.new("RGB", (8, 8), (128, 64, 32)).save(png)
    for folder in sources:
        (root / folder).mkdir()
    for path in images.path:
        os.link(png, root / path)
    return {"images": len(images), "pairs": n_pairs, "scores": len(scores), "rankings": len(rankings)}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    print(
        "| scale | images | pair rows | tables read+validated s | image check s | samples+splits s | write s "
        "| table part s | table part µs/row |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "bench"
            counts = make_synthetic_bench(root, scale)
            start = time.perf_counter()
            out = build_dataset(root, Path(tmp) / "prepared", DataConfig(num_workers=args.workers))
            total = time.perf_counter() - start
            report = pd.read_json(out / "report.json", typ="series")
            t = report["timings"]
            table = total - t["check_images"]
            n_rows = sum(counts.values())
            print(
                f"| {scale:g} | {counts['images']} | {counts['pairs']} | {t['read_and_validate_tables']:.2f} "
                f"| {t['check_images']:.2f} | {t['build_samples_and_splits']:.2f} | {t['write']:.2f} "
                f"| {table:.2f} | {1e6 * table / n_rows:.1f} |"
            )
            rows.append({"scale": scale, **counts, "total_s": total, **t, "counts": report["counts"]})
            shutil.rmtree(root)
    return rows


if __name__ == "__main__":
    main()
