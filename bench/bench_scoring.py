"""Scoring throughput: LL-Score's one-pass scorer vs a naive generate-and-parse scorer, same tiny model.

    python bench/bench_scoring.py [--family qwen2_5_vl] [--images 64] [--ckpt DIR] [--device cpu]

The naive scorer is what Q-Align-style evaluators are often wrapped as: ask the question, let the model write
its answer (`generate()`, greedy, as many new tokens as the answer stem plus one level word), and parse the
level word from the text. It can only return a level, not a continuous score; we time it anyway.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llscore import LLScore
from llscore.hub_kernels import keep_bitsandbytes_off_the_hub
from llscore.modeling import write_llscore_config
from llscore.prompts import LLScoreConfig, ResolutionRule


def naive_generate_scorer(scorer: LLScore, restored, degraded, batch_size: int) -> list[str | None]:
    """Generate the answer turn and parse the first level word out of it."""
    contract = scorer.config.prompts
    processor = scorer.processor
    stem_tokens = len(processor.tokenizer.encode(" " + contract.quality_stem, add_special_tokens=False))
    messages = [contract.messages("quality", with_degraded=True)[0]]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    levels = []
    for start in range(0, len(restored), batch_size):
        batch_r = restored[start : start + batch_size]
        batch_d = degraded[start : start + batch_size]
        inputs = processor(
            text=[text] * len(batch_r),
            images=[[d, r] for r, d in zip(batch_r, batch_d, strict=True)],
            padding=True,
            padding_side="left",
            return_tensors="pt",
            images_kwargs={
                "size": {"shortest_edge": 3136, "longest_edge": scorer.config.resolution.max_pixels}
            },
        ).to(scorer.device)
        with torch.inference_mode():
            output = scorer.model.generate(
                **inputs, max_new_tokens=stem_tokens + 1, min_new_tokens=stem_tokens + 1, do_sample=False
            )
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        levels.extend(next((w.strip() for w in contract.level_words if w in " " + a), None) for a in answers)
    return levels


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--width", type=int, default=1, help="tiny model width multiplier (1: hidden 64)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--ckpt", help="an LL-Score checkpoint (default: a fresh tiny one)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    keep_bitsandbytes_off_the_hub()  # before loading a model imports bitsandbytes (docs/architecture.md)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            from llscore_sim.tiny import build_tiny_checkpoint

            ckpt = build_tiny_checkpoint(
                args.family, Path(tmp) / "tiny", width=args.width, layers=args.layers
            )
            write_llscore_config(LLScoreConfig(resolution=ResolutionRule(3136, 12544)), ckpt)
        scorer = LLScore.from_pretrained(ckpt, device=args.device)
        rng = np.random.default_rng(0)
        restored = [
            Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(args.images)
        ]
        degraded = [
            Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for _ in range(args.images)
        ]
        scorer.score(restored[:2], degraded[:2], hallucination=False)
        print(
            f"{args.images} images (128x128, with degraded input), quality question only, device {args.device}"
        )
        millions = sum(p.numel() for p in scorer.model.parameters()) / 1e6
        print(
            f"model: {args.ckpt or f'tiny {args.family}, width {args.width}, {args.layers} layers'} ({millions:.1f}M parameters)"
        )
        print(f"{'batch':>5} | {'LL-Score img/s':>14} | {'generate() img/s':>16} | {'speed-up':>8}")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            ours = timed(
                lambda b=batch_size: scorer.score(restored, degraded, batch_size=b, hallucination=False)
            )
            naive = timed(lambda b=batch_size: naive_generate_scorer(scorer, restored, degraded, b))
            print(
                f"{batch_size:>5} | {args.images / ours:>14.1f} | {args.images / naive:>16.1f} | {naive / ours:>7.1f}x"
            )


if __name__ == "__main__":
    main()
