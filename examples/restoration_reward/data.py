"""The sources a restorer is trained and judged on: degraded inputs, clean references and the consensus of the
bench's own restorations, by the prepared dataset's split; the bench's own restorers' utilities on them
(examples/reward_finetune.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from llscore.data.config import DataConfig
from llscore.data.schema import GROUND_TRUTH
from llscore.data.splits import check_splits
from llscore.data.tables import load_bench
from llscore.images import read_image
from llscore_sim.mini_bench.perception import consensus


@dataclass
class Sources:
    """Degraded inputs, clean references and the consensus of the bench's own restorations (what the simulated
    people see beside a new output) of some sources, as (n, 3, H, W) tensors in [0, 1]."""

    ids: list[str]
    degraded: torch.Tensor
    clean: torch.Tensor
    agreed: torch.Tensor

    def to(self, device) -> Sources:
        return Sources(self.ids, *(x.to(device) for x in (self.degraded, self.clean, self.agreed)))


def read_square(path: Path, size: int) -> torch.Tensor:
    image = read_image(path)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def load_sources(
    bench_dir, prepared_dir, tasks, size: int = 112, data_config: DataConfig | None = None
) -> dict[str, Sources]:
    """Training and held-out (val + test) sources of `tasks` by the prepared dataset's split (give the one the
    scorer was trained on, so that held-out scenes are new to it too), resized to `size` x `size`."""
    splits_file = Path(prepared_dir) / "splits.json"
    if not splits_file.exists():
        raise FileNotFoundError(
            f"{splits_file} is missing: run the main job first (accelerate launch train.py --config "
            "configs/llscore_tiny.yaml) or point --prepared at a prepared dataset"
        )
    splits = json.loads(splits_file.read_text())
    check_splits(splits, file=str(splits_file))
    bench = load_bench(bench_dir, data_config)
    references = bench.images[bench.images["kind"] == "reference"].set_index("source_id")["path"]
    restored = bench.images[bench.images["kind"] == "restored"].groupby("source_id")["path"].apply(list)
    sources = bench.sources[bench.sources["task"].isin(tasks)]
    unknown = sorted(set(tasks) - set(bench.sources["task"]))
    if unknown:
        raise ValueError(
            f"tasks {unknown} are not in {bench_dir} (it has {sorted(set(bench.sources['task']))})"
        )
    out = {}
    for name, split_ids in (("train", splits["train"]), ("held_out", splits["val"] + splits["test"])):
        ids = [s for s in sources.index if s in set(split_ids)]
        missing = [s for s in ids if s not in references.index]
        if missing:
            raise ValueError(f"{bench_dir}: sources {missing[:5]} have no clean reference image")
        if not ids:
            raise ValueError(f"no {name} sources of tasks {list(tasks)} in {bench_dir}")
        out[name] = Sources(
            ids,
            torch.stack([read_square(sources.loc[s, "degraded"], size) for s in ids]),
            torch.stack([read_square(references[s], size) for s in ids]),
            torch.stack([_consensus(restored[s], size) for s in ids]),
        )
    return out


def _consensus(paths: list[str], size: int) -> torch.Tensor:
    images = np.stack([read_square(p, size).permute(1, 2, 0).numpy() for p in paths])
    return torch.from_numpy(consensus(images)).permute(2, 0, 1)


def batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` index batches drawn without replacement within each pass over the n items."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += rng.permutation(n).tolist()
        yield torch.tensor(order[:batch_size])
        order = order[batch_size:]


def bench_restorers(bench_dir, source_ids, data_config: DataConfig | None = None) -> pd.DataFrame | None:
    """The bench's own restorers on `source_ids`, from ground_truth.csv (None where the bench has none): the
    scale on which to read the utilities above."""
    path = Path(bench_dir) / GROUND_TRUTH
    if not path.exists():
        return None
    images = load_bench(bench_dir, data_config).images.set_index("image_id")
    truth = pd.read_csv(path).join(images[["source_id", "model_family"]], on="image_id")
    truth = truth[truth["source_id"].isin(source_ids)]
    rows = [("all", truth), *truth.groupby("model_family")]
    return pd.DataFrame(
        [
            {
                "restorers": name,
                "images": len(part),
                "mean utility": part["utility"].mean(),
                "hallucinated": part["hallucinated"].mean(),
            }
            for name, part in rows
        ]
    )
