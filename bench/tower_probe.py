"""What the LLM is handed: a small head trained on the frozen visual tokens of a checkpoint, for the same pairs,
objective and split as the main job, to tell whether the tower or the LLM's reading limits LL-Score
(docs/training.md, "Capacity").

    python bench/tower_probe.py [--ckpt checkpoints/tiny-qwen2_5_vl-lowlevel-v128m1] [--minutes 3]
                                [--prepared data/llbench_mini_prepared] [--out bench/results]

Every image is encoded once by the checkpoint's vision tower and merger (`pooler_output`: the tokens the LLM reads,
at the recipe's resolution rule). The head is the pretraining's comparison head made to answer: each token of a
restoration beside the same token of its degraded input, `[ours, theirs, ours - theirs]`, through one hidden
layer, pooled by mean and max over the tokens into a quality score and a hallucination logit. It is trained with
bench/cnn_rival.py's objective (Bradley-Terry BCE on each compared pair's vote fraction, BCE on the hallucination
votes), validated every `--validate-every` seconds on the recipe's validation split, the best kept, then measured
on validation and test by eval.py's own functions. Only the head learns: if it follows people better than the
main job, the tokens carry what the LLM fails to read. A yardstick, not part of the library.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from cnn_rival import RECIPE, measure, pair_loss, rival_parser, split_report, train_for_minutes, votes
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor

from llscore.families import family_of
from llscore.images import read_image
from llscore.prompts import ResolutionRule


class TokenComparisonHead(torch.nn.Module):
    """Per token: [restored, degraded, restored - degraded] -> hidden -> pooled (mean, max) -> (score, logit)."""

    def __init__(self, width: int, hidden: int = 64):
        super().__init__()
        self.token = torch.nn.Sequential(torch.nn.Linear(3 * width, hidden), torch.nn.GELU())
        self.out = torch.nn.Linear(2 * hidden, 2)

    def forward(self, degraded: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        x = self.token(torch.cat([restored, degraded, restored - degraded], -1))
        return self.out(torch.cat([x.mean(1), x.amax(1)], -1))


def encode(
    ckpt: Path, paths: list, rule: ResolutionRule = RECIPE.resolution, batch_size: int = 64
) -> torch.Tensor:
    """(n, tokens, width) visual tokens of each image (paths or PIL images of one size), as the checkpoint's LLM
    receives them under the resolution rule."""
    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(ckpt)
    size = family_of(model.config).image_size(rule)
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, len(paths), batch_size), desc="visual tokens"):
            batch = [p if isinstance(p, Image.Image) else read_image(p) for p in paths[i : i + batch_size]]
            inputs = processor.image_processor(batch, return_tensors="pt", size=size)
            features = model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
            chunks.append(torch.stack(features.pooler_output))
    return torch.cat(chunks)


def main(argv=None) -> dict:
    parser = rival_parser(__doc__, minutes=3.0, validate_every=20.0, batch_size=32)
    parser.add_argument("--ckpt", type=Path, default=Path("checkpoints/tiny-qwen2_5_vl-lowlevel-v128m1"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    pairs, p_a, hallucinated, splits = votes(args.prepared)
    paths = sorted(
        {*pairs["degraded"], *pairs["restored_a"], *pairs["restored_b"]}.union(
            *({*data.images["degraded"], *data.images["restored"]} for data in splits.values())
        )
    )
    index = {path: i for i, path in enumerate(paths)}
    start = time.perf_counter()
    tokens = encode(args.ckpt, paths)
    encode_s = time.perf_counter() - start

    def ids(column) -> torch.Tensor:
        return torch.tensor([index[p] for p in column])

    degraded, a, b = ids(pairs["degraded"]), ids(pairs["restored_a"]), ids(pairs["restored_b"])
    inputs = {
        name: (ids(data.images["degraded"]), ids(data.images["restored"])) for name, data in splits.items()
    }

    head = TokenComparisonHead(tokens.shape[-1])
    optimiser = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)

    def train_step(step: int) -> None:
        pick = torch.randint(len(pairs), (args.batch_size,), generator=generator)
        d = tokens[degraded[pick]]
        loss = pair_loss(head(d, tokens[a[pick]]), head(d, tokens[b[pick]]), p_a[pick], hallucinated[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def measured(name: str) -> dict:
        with torch.no_grad():
            out = head(*(tokens[ids] for ids in inputs[name])).numpy()
        return measure(splits[name], out, "probe")

    curve, steps = train_for_minutes(
        head,
        train_step,
        lambda: measured("val"),
        args.minutes,
        args.validate_every,
        "probe head (s of training)",
    )
    report = {
        "ckpt": str(args.ckpt),
        "tokens_per_image": tokens.shape[1],
        "token_width": tokens.shape[2],
        "head_parameters": sum(p.numel() for p in head.parameters()),
        "encode_s": encode_s,
        "steps": steps,
        "minutes": args.minutes,
        "curve": curve,
    }
    report |= {name: split_report(measured(name), "probe") for name in splits}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"tower_probe_{args.ckpt.name}_seed{args.seed}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    return report


if __name__ == "__main__":
    main()
