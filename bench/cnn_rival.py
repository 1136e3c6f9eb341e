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
from llscore_sim.settings import load_config

RECIPE = load_config(Path(__file__).resolve().parents[1] / "configs" / "llscore_tiny.yaml")  # the main job's


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


def pair_loss(
    out_a: torch.Tensor, out_b: torch.Tensor, p_a: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Bradley-Terry BCE of sigmoid(s_A - s_B) against the vote fraction, plus BCE of each hallucination logit
    against its vote fraction where one is known."""
    loss = F.binary_cross_entropy_with_logits(out_a[:, 0] - out_b[:, 0], p_a)
    logits = torch.stack([out_a[:, 1], out_b[:, 1]], 1)
    known = ~torch.isnan(labels)
    if known.any():
        loss = loss + F.binary_cross_entropy_with_logits(logits[known], labels[known])
    return loss


def measure(data, out: np.ndarray, name: str) -> dict:
    """eval.py's measurements of (score, hallucination logit) outputs under the evaluator name `name`."""
    return evaluate(data, Evaluators({name: out[:, 0]}, expit(out[:, 1])), n_boot=0)


def train_for_minutes(net, train_step, validate, minutes: float, validate_every: float, desc: str):
    """Call `train_step(step)` (one optimiser step) for `minutes` of wall-clock, validating every `validate_every`
    seconds of training by `validate()` (eval.py's measurements on the validation split); the net with the best
    validation within-source SRCC is loaded back, as the main job keeps its best checkpoint. Returns the curve
    and the number of steps."""
    budget, trained, step = minutes * 60, 0.0, 0
    curve, best, best_state = [], -np.inf, None
    bar = tqdm(total=round(budget), desc=desc)
    while trained < budget:
        chunk_end = min(budget, trained + validate_every)
        start = time.perf_counter()
        while trained + (time.perf_counter() - start) < chunk_end:
            train_step(step)
            step += 1
        elapsed = time.perf_counter() - start
        trained += elapsed
        bar.update(round(elapsed))
        measured = validate()
        (overall,) = measured["overall"].values()
        point = {
            "step": step,
            "minutes": trained / 60,
            "val_within_source_srcc": overall["within_source_srcc"],
            "val_pairwise_acc": overall["pairwise_acc"],
            "val_hallucination_within_restorer_auroc": measured["hallucination"].get("within_restorer_auroc"),
        }
        curve.append(point)
        bar.write(json.dumps(point))
        if point["val_within_source_srcc"] > best:
            best, best_state = point["val_within_source_srcc"], copy.deepcopy(net.state_dict())
    bar.close()
    net.load_state_dict(best_state)
    return curve, step


def split_report(measured: dict, name: str) -> dict:
    """The numbers docs/training.md compares, from eval.py's measurements of one split."""
    overall, unseen = measured["overall"][name], measured["unseen_restorers"]
    return {
        "within_source_srcc": overall["within_source_srcc"],
        "pairwise_acc": overall["pairwise_acc"],
        "srcc": overall["srcc"],
        "hallucination": measured["hallucination"],
        "unseen_restorers_within_source_srcc": unseen.get("scores", {})
        .get(name, {})
        .get("within_source_srcc"),
    }


def rival_parser(doc: str, minutes: float, validate_every: float, batch_size: int) -> argparse.ArgumentParser:
    """The arguments every learned rival takes, with its own defaults."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("data/llbench_mini_prepared"))
    parser.add_argument("--minutes", type=float, default=minutes, help="training wall-clock")
    parser.add_argument("--validate-every", type=float, default=validate_every, help="seconds of training")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="compared pairs per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    return parser


def votes(prepared_dir: Path):
    """The main job's training pairs (with each pair's vote fraction for A and its hallucination vote fractions)
    and its validation (`max_val_images` of the recipe) and test splits."""
    prepared = load_prepared(prepared_dir)
    pairs = prepared.training_pairs().to_pandas()
    p_a = torch.tensor(pairs["p_a_better"].to_numpy(), dtype=torch.float32)
    hallucinated = torch.tensor(pairs[["hallucination_a", "hallucination_b"]].to_numpy(), dtype=torch.float32)
    splits = {
        "val": split_data(prepared, "val", RECIPE.data.max_val_images),
        "test": split_data(prepared, "test"),
    }
    return pairs, p_a, hallucinated, splits


def main(argv=None) -> dict:
    args = rival_parser(__doc__, minutes=7.5, validate_every=60.0, batch_size=16).parse_args(argv)
    torch.manual_seed(args.seed)

    pairs, p_a, hallucinated, splits = votes(args.prepared)
    pixels = Pixels()
    degraded = pixels.ids(pairs["degraded"])
    a, b = pixels.ids(pairs["restored_a"]), pixels.ids(pairs["restored_b"])
    inputs = {
        name: (pixels.ids(data.images["degraded"]), pixels.ids(data.images["restored"]))
        for name, data in splits.items()
    }

    net = PairCNN()
    parameters = sum(p.numel() for p in net.parameters())
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)

    def train_step(step: int) -> None:
        pick = torch.randint(len(pairs), (args.batch_size,), generator=generator)
        d, ra, rb = (pixels.batch(ids[pick]) for ids in (degraded, a, b))
        if step % 2 == 1:  # both images of a pair flipped together: same content, new pixels
            d, ra, rb = d.flip(-1), ra.flip(-1), rb.flip(-1)
        loss = pair_loss(net(d, ra), net(d, rb), p_a[pick], hallucinated[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def measured(name: str) -> dict:
        return measure(splits[name], scores(net, pixels, *inputs[name]), "cnn")

    curve, steps = train_for_minutes(
        net,
        train_step,
        lambda: measured("val"),
        args.minutes,
        args.validate_every,
        "CNN rival (s of training)",
    )
    report = {"parameters": parameters, "steps": steps, "minutes": args.minutes, "curve": curve}
    report |= {name: split_report(measured(name), "cnn") for name in splits}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cnn_rival.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    return report


if __name__ == "__main__":
    main()
