"""How learnable is a prepared LL-Bench-mini split for a model trained from scratch? (the #5 diagnosis)

Prints, on the val and test splits, the SRCC against the fitted human scores (overall and within source) of
- oracles that only the simulation knows (ground_truth.csv): the annotator pool's expected perceived utility
  (the ceiling set by vote noise), the fidelity to the clean scene that no annotator sees, and the
  hallucination flag alone (what a perfect hallucination detector would reach);
- PSNR(restored, degraded input), the classic fidelity a model could read off its two images;
- a from-scratch CNN on (degraded, restored, restored − degraded) trained with MSE on the scores: the
  inductive bias the tiny Qwen-VL lacks, given the same data. Its learning curve says whether the bench or
  the model is the limit for the main job.

python bench/learnability.py --prepared data/llbench_mini_prepared --bench data/llbench_mini [--steps 2500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from tqdm.auto import tqdm

from llscore.data.prepared import load_prepared
from llscore.data.schema import GROUND_TRUTH
from llscore.metrics import srcc, within_source_srcc

SPLITS = ("train", "val", "test")


def load_split(quality) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 6, H, W) = degraded and restored stacked on channels, and the float scores."""
    cache: dict[str, np.ndarray] = {}

    def pixels(path: str) -> np.ndarray:
        if path not in cache:
            cache[path] = np.array(Image.open(path).convert("RGB"))
        return cache[path]

    stacked = np.stack(
        [
            np.concatenate([pixels(d), pixels(r)], -1)
            for d, r in zip(quality["degraded"], quality["restored"], strict=True)
        ]
    )
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous(), torch.tensor(quality["score"])


def features(batch: torch.Tensor) -> torch.Tensor:
    images = batch.float() / 255
    degraded, restored = images[:, :3], images[:, 3:]
    return torch.cat([degraded, restored, restored - degraded], dim=1)


def probe_cnn() -> torch.nn.Module:
    def block(cin, cout):
        return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]

    return torch.nn.Sequential(
        *block(9, 32),
        *block(32, 64),
        *block(64, 64),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 1),
    )


def oracle_table(prepared, bench_dir) -> pd.DataFrame:
    truth = pd.read_csv(f"{bench_dir}/{GROUND_TRUTH}").set_index("image_id")
    rows = []
    for split in ("val", "test"):
        q = prepared.quality[split]
        human, sources = np.asarray(q["score"]), np.asarray(q["source_id"])
        known = truth.loc[list(q["image_id"])]
        psnr = [
            peak_signal_noise_ratio(np.array(Image.open(d)), np.array(Image.open(r)), data_range=255)
            for d, r in zip(q["degraded"], q["restored"], strict=True)
        ]
        predictors = {
            "perceived utility (oracle)": known["utility"],
            "clean fidelity (hidden)": known["clean_fidelity"],
            "not hallucinated (oracle)": -known["hallucinated"],
            "PSNR(restored, degraded)": psnr,
        }
        rows += [
            {
                "split": split,
                "predictor": name,
                "srcc": srcc(values, human),
                "within_source_srcc": within_source_srcc(np.asarray(values, dtype=float), human, sources)[0],
            }
            for name, values in predictors.items()
        ]
    return pd.DataFrame(rows)


def train_probe(
    data: dict, steps: int, batch_size: int, lr: float, seed: int, evals: int = 5
) -> pd.DataFrame:
    torch.manual_seed(seed)
    net = probe_cnn()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    images, scores = data["train"]
    generator = torch.Generator().manual_seed(seed)
    curve, start = [], time.time()

    def evaluate(split: str) -> float:
        net.eval()
        with torch.no_grad():
            x, y = data[split]
            pred = torch.cat([net(features(x[i : i + 256]))[:, 0] for i in range(0, len(y), 256)])
        net.train()
        return srcc(pred.numpy(), y.numpy())

    for step in tqdm(range(1, steps + 1), desc="CNN probe"):
        index = torch.randint(len(scores), (batch_size,), generator=generator)
        batch = images[index].flip(-1) if step % 2 else images[index]
        loss = F.mse_loss(net(features(batch))[:, 0], scores[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % max(1, steps // evals) == 0 or step == steps:
            curve.append({"step": step, "seconds": time.time() - start, **{s: evaluate(s) for s in SPLITS}})
    return pd.DataFrame(curve).drop_duplicates("step")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prepared", default="data/llbench_mini_prepared")
    parser.add_argument("--bench", default="data/llbench_mini", help="holds ground_truth.csv")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    prepared = load_prepared(args.prepared)
    print(oracle_table(prepared, args.bench).to_string(index=False, float_format="%.3f"))
    data = {split: load_split(prepared.quality[split]) for split in SPLITS}
    print({split: len(y) for split, (_, y) in data.items()}, "images per split")
    curve = train_probe(data, args.steps, args.batch_size, args.lr, args.seed)
    print("CNN probe, SRCC against the human scores:")
    print(curve.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
