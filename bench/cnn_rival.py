"""A learned small rival: a compact CNN trained on the same pairs, for the same minutes, on the same split as
the main job, to know what LL-Bench-mini allows a small model on 2 CPU cores (docs/training.md, "Capacity").

    python bench/cnn_rival.py [--minutes 7.5] [--prepared data/llbench_mini_prepared] [--out bench/results]

The CNN sees what LL-Score sees: the degraded input and the restoration at 112 px (stacked with their
difference, 9 channels), and answers a quality score s and a hallucination logit h. It is trained with the head
formulation's objective (Bradley-Terry BCE of sigmoid(s_A - s_B) against the vote fraction of each compared
pair, plus BCE of sigmoid(h) against the hallucination vote fraction; docs/training.md) for a wall-clock budget,
validated on the recipe's validation split (3 unseen photographs) every `--validate-every` seconds; the best
validation is kept, as the main job keeps its best checkpoint, and measured on the test split by eval.py's own
functions (`llscore.evaluation.evaluate`). Not part of the library: it is a yardstick, not an evaluator.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.special import expit
from tqdm.auto import tqdm

from llscore.data.prepared import load_prepared
from llscore.evaluation import Evaluators, evaluate, split_data

MAX_VAL_IMAGES = 1000  # the main job's validation split (configs/llscore_tiny.yaml: max_val_images)


class PairCNN(torch.nn.Module):
    """Four strided 3x3 stages over (degraded, restored, restored - degraded), then mean and max pooling."""

    def __init__(self, widths=(32, 64, 96, 128)):
        super().__init__()
        layers, channels = [], 9
        for width in widths:
            layers += [
                torch.nn.Conv2d(channels, width, 3, padding=1),
                torch.nn.GELU(),
                torch.nn.Conv2d(width, width, 3, padding=1, stride=2),
                torch.nn.GELU(),
            ]
            channels = width
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(2 * channels, 2)  # quality score, hallucination logit

    def forward(self, degraded: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        x = self.features(torch.cat([degraded, restored, restored - degraded], dim=1))
        return self.head(torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1))


class Pixels:
    """Every image of the prepared dataset once, as uint8 (3, H, W) tensors indexed by path."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.images: list[torch.Tensor] = []

    def ids(self, paths) -> torch.Tensor:
        for path in paths:
            if path not in self.index:
                self.index[path] = len(self.images)
                self.images.append(
                    torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
                )
        return torch.tensor([self.index[path] for path in paths])

    def batch(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.images[i] for i in ids.tolist()]).float() / 255


def scores(net: PairCNN, pixels: Pixels, degraded: torch.Tensor, restored: torch.Tensor) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        out = torch.cat(
            [
                net(pixels.batch(degraded[i : i + 128]), pixels.batch(restored[i : i + 128]))
                for i in range(0, len(restored), 128)
            ]
        )
    net.train()
    return out.numpy()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prepared", type=Path, default=Path("data/llbench_mini_prepared"))
    parser.add_argument("--minutes", type=float, default=7.5, help="training wall-clock (the main job's)")
    parser.add_argument("--validate-every", type=float, default=60.0, help="seconds of training")
    parser.add_argument("--batch-size", type=int, default=16, help="compared pairs per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    prepared = load_prepared(args.prepared)
    pairs = prepared.training_pairs().to_pandas()
    pixels = Pixels()
    degraded = pixels.ids(pairs["degraded"])
    a, b = pixels.ids(pairs["restored_a"]), pixels.ids(pairs["restored_b"])
    p_a = torch.tensor(pairs["p_a_better"].to_numpy(), dtype=torch.float32)
    hallucinated = torch.tensor(pairs[["hallucination_a", "hallucination_b"]].to_numpy(), dtype=torch.float32)
    splits = {"val": split_data(prepared, "val", MAX_VAL_IMAGES), "test": split_data(prepared, "test")}
    inputs = {
        name: (pixels.ids(data.images["degraded"]), pixels.ids(data.images["restored"]))
        for name, data in splits.items()
    }

    net = PairCNN()
    parameters = sum(p.numel() for p in net.parameters())
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    budget, trained, step = args.minutes * 60, 0.0, 0
    curve, best, best_state = [], -np.inf, None
    bar = tqdm(total=round(budget), desc="CNN rival (s of training)")
    while trained < budget:
        chunk_end = min(budget, trained + args.validate_every)
        start = time.perf_counter()
        while trained + (time.perf_counter() - start) < chunk_end:
            pick = torch.randint(len(pairs), (args.batch_size,), generator=generator)
            flip = step % 2 == 1  # both images of a pair flipped together: same content, new pixels
            d, ra, rb = (pixels.batch(ids[pick]) for ids in (degraded, a, b))
            if flip:
                d, ra, rb = d.flip(-1), ra.flip(-1), rb.flip(-1)
            out_a, out_b = net(d, ra), net(d, rb)
            loss = F.binary_cross_entropy_with_logits(out_a[:, 0] - out_b[:, 0], p_a[pick])
            labels = hallucinated[pick]
            logits = torch.stack([out_a[:, 1], out_b[:, 1]], 1)
            known = ~torch.isnan(labels)
            if known.any():
                loss = loss + F.binary_cross_entropy_with_logits(logits[known], labels[known])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
        elapsed = time.perf_counter() - start
        trained += elapsed
        bar.update(round(elapsed))
        val = splits["val"]
        out = scores(net, pixels, *inputs["val"])
        measured = evaluate(val, Evaluators({"cnn": out[:, 0]}, expit(out[:, 1])), n_boot=0)
        point = {
            "step": step,
            "minutes": trained / 60,
            "val_within_source_srcc": measured["overall"]["cnn"]["within_source_srcc"],
            "val_pairwise_acc": measured["overall"]["cnn"]["pairwise_acc"],
            "val_hallucination_within_restorer_auroc": measured["hallucination"].get("within_restorer_auroc"),
        }
        curve.append(point)
        bar.write(json.dumps(point))
        if point["val_within_source_srcc"] > best:
            best, best_state = point["val_within_source_srcc"], copy.deepcopy(net.state_dict())
    bar.close()

    net.load_state_dict(best_state)
    report = {"parameters": parameters, "steps": step, "minutes": args.minutes, "curve": curve}
    for name, data in splits.items():
        out = scores(net, pixels, *inputs[name])
        measured = evaluate(data, Evaluators({"cnn": out[:, 0]}, expit(out[:, 1])), n_boot=0)
        overall, unseen = measured["overall"]["cnn"], measured["unseen_restorers"]
        report[name] = {
            "within_source_srcc": overall["within_source_srcc"],
            "pairwise_acc": overall["pairwise_acc"],
            "srcc": overall["srcc"],
            "hallucination": measured["hallucination"],
            "unseen_restorers_within_source_srcc": unseen.get("scores", {})
            .get("cnn", {})
            .get("within_source_srcc"),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cnn_rival.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    return report


if __name__ == "__main__":
    main()
