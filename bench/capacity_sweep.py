"""The embedded evaluator's capacity, read as a frontier: validation agreement against minutes of training,
one line per model shape (docs/training.md, "Capacity").

    python bench/capacity_sweep.py [--minutes 4] [--shapes today,v128_m1,...] [--out outputs/capacity_sweep]

Each shape is a tiny Qwen2.5-VL (`llscore_sim.tiny.build_tiny_checkpoint`: vision-tower width, LLM width and
depth, patches merged per visual token), randomly initialised unless it names pretrained weights; a `_pt` shape
(PRETRAINED_SHAPES) starts from a quick low-level pretraining of its own (`data_prep/pretrain_tiny_base.py`,
QUICK_PRETRAINING), made once. It is timed (a run of `--timing-steps` steps less one of a quarter of them) by
the main job's recipe (`configs/llscore_tiny.yaml`, no validation), then trained by the same recipe for the
steps that fit `--minutes` at that rate (its cosine schedule over them) and validated four times on the recipe's
validation split (3 photographs training never saw). Time the shapes on a quiet machine: the step counts follow
the timing. Minutes on the plot are the measured rate times the step, so validation and start-up are not
counted. A finished run is reused, so the sweep can be extended shape by shape.

Writes `shapes.csv` (shape, parameters, seconds per step, steps), `curves.csv` (one row per validation) and
`capacity.png` (validation within-source SRCC and pairwise accuracy against minutes; higher is better).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from learning_curve import METRICS, curve
from transformers import AutoConfig, AutoModelForImageTextToText

from llscore.report import save_figure
from llscore_sim.tiny import build_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "llscore_tiny.yaml"
SHIPPED_BASE = REPO / "assets" / "tiny-qwen2_5_vl-lowlevel.safetensors"

# name -> build_tiny_checkpoint arguments; widths are multiples of the tiny sizes (vision 32, LLM 64).
SHAPES: dict[str, dict] = {
    "shipped": {"weights": str(SHIPPED_BASE)},  # today's main job: today's shape, low-level pretrained
    "today": {},  # the same shape from a random start: what pretraining buys
    "m1": {"merge_size": 1},
    "v128_m1": {"vision_width": 4, "merge_size": 1},
    "v128_l128_m1": {"vision_width": 4, "width": 2, "merge_size": 1},
    "v128": {"vision_width": 4},
    "v128_l256_m1": {"vision_width": 4, "width": 4, "merge_size": 1},
    "v128_l128x4_m1": {"vision_width": 4, "width": 2, "layers": 4, "vision_layers": 2, "merge_size": 1},
}
# Shapes ranked after a quick low-level pretraining (a quarter of the shipped base's: QUICK_PRETRAINING), since
# from a random start none of them learns in minutes; the base is made once under --out/pretrained.
PRETRAINED_SHAPES: dict[str, dict] = {
    "today_pt": {},
    "m1_pt": {"merge_size": 1},
    "v128_m1_pt": {"vision_width": 4, "merge_size": 1},
}
QUICK_PRETRAINING = {"sources": 1000, "vision_steps": 1000, "steps": 2500}


def pretrained_base(name: str, out: Path, seed: int) -> dict:
    """build_tiny_checkpoint's arguments for a quick-pretrained shape, pretraining it first if not yet done."""
    weights = out / "pretrained" / f"{name}.safetensors"
    shape = PRETRAINED_SHAPES[name]
    if not weights.is_file():
        command = [
            sys.executable,
            str(REPO / "data_prep" / "pretrain_tiny_base.py"),
            *("--out", weights, "--work-dir", out / "pretrained" / name, "--seed", seed),
            *("--pool-dir", out / "pretrained" / "pool"),
            *(f"--{key.replace('_', '-')}={value}" for key, value in {**shape, **QUICK_PRETRAINING}.items()),
        ]
        subprocess.run(list(map(str, command)), check=True, cwd=REPO)
    return {**shape, "weights": str(weights)}


def describe(base: Path) -> dict:
    """What a built base is: tower and LLM widths and depths, tokens per 112 px image, parameters."""
    config = AutoConfig.from_pretrained(base)
    vision, text = config.vision_config, config.text_config
    model = AutoModelForImageTextToText.from_pretrained(base)
    side = 112 // (vision.patch_size * vision.spatial_merge_size)
    return {
        "vision_width": vision.hidden_size,
        "vision_layers": vision.depth,
        "llm_width": text.hidden_size,
        "llm_layers": text.num_hidden_layers,
        "tokens_per_image": side * side,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def train(base: Path, out: Path, steps: int, validate: bool, seed: int) -> dict:
    """One run of train.py's recipe on `base`; its trainer_state.json (reused when it already finished)."""
    state = out / "trainer_state.json"
    if not (state.is_file() and json.loads(state.read_text())["global_step"] == steps):
        every = max(1, steps // 4)
        schedule = (
            ["--eval_steps", every, "--save_steps", every]
            if validate
            else ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]
        )
        overrides = [
            *("--model_name_or_path", base, "--output_dir", out, "--overwrite_output_dir", "true"),
            *("--max_steps", steps, "--warmup_steps", min(50, steps // 10), "--seed", seed),
            *("--validate_before_training", str(validate).lower(), "--save_total_limit", 1),
            *schedule,
        ]
        command = [sys.executable, str(REPO / "train.py"), "--config", str(RECIPE), *map(str, overrides)]
        subprocess.run(command, check=True, cwd=REPO)
    return json.loads(state.read_text())


def runtime(state: dict) -> float:
    return next(entry["train_runtime"] for entry in state["log_history"] if "train_runtime" in entry)


def plot(curves: pd.DataFrame, path: Path) -> None:
    shown = {k: v for k, v in METRICS.items() if k != "eval_hallucination_auroc"}
    figure, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4))
    for axis, (column, label) in zip(axes, shown.items(), strict=True):
        colours = plt.get_cmap("tab20").colors
        for index, (shape, part) in enumerate(curves.groupby("shape", sort=False)):
            style = "--" if shape in PRETRAINED_SHAPES else "-"  # dashed: after the quick pretraining
            axis.plot(part["minutes"], part[column], style, marker="o", color=colours[index], label=shape)
        axis.set(
            xlabel="minutes of training (2 CPU cores, quiet)",
            ylabel=f"validation {label}",
            title=f"{label} (higher is better)",
        )
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save_figure(figure, path)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes",
        default=",".join([*SHAPES, *PRETRAINED_SHAPES]),
        help=f"comma-separated, from {', '.join([*SHAPES, *PRETRAINED_SHAPES])}",
    )
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per shape")
    parser.add_argument("--timing-steps", type=int, default=80)
    parser.add_argument("--timing-only", action="store_true", help="time the shapes, train none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "capacity_sweep")
    args = parser.parse_args(argv)
    names = args.shapes.split(",")
    unknown = sorted(set(names) - set(SHAPES) - set(PRETRAINED_SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; see --help")

    rows, curves = [], []
    for name in names:
        base = args.out / "bases" / name
        if not base.exists():
            arguments = SHAPES[name] if name in SHAPES else pretrained_base(name, args.out, args.seed)
            build_tiny_checkpoint("qwen2_5_vl", base, seed=args.seed, **arguments)
        # The first steps of a run cost far more than the rest (start-up, first shapes): the rate is the
        # difference between a short and a long timing run.
        short, long = (
            runtime(train(base, args.out / "timing" / f"{name}-{n}", n, validate=False, seed=args.seed))
            for n in (args.timing_steps // 4, args.timing_steps)
        )
        rate = (long - short) / (args.timing_steps - args.timing_steps // 4)
        steps = max(4, round(args.minutes * 60 / rate))
        rows.append({"shape": name, **describe(base), "s_per_step": rate, "steps": steps})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3f"), flush=True)
        if args.timing_only:
            continue
        run = args.out / "runs" / f"{name}-{args.minutes:g}min"
        train(base, run, steps, validate=True, seed=args.seed)
        part = curve(run).assign(shape=name)
        part["minutes"] = part["step"] * rate / 60  # the quiet rate, not the run's (validation and sharing)
        curves.append(part)

    args.out.mkdir(parents=True, exist_ok=True)
    shapes = pd.DataFrame(rows)
    shapes.to_csv(args.out / "shapes.csv", index=False, float_format="%.4f")
    print(shapes.to_string(index=False, float_format="%.3f"))
    if not curves:
        return shapes
    table = pd.concat(curves, ignore_index=True)
    table.to_csv(args.out / "curves.csv", index=False, float_format="%.4f")
    plot(table, args.out / "capacity.png")
    print(table.to_string(index=False, float_format="%.3f"))
    return table


if __name__ == "__main__":
    main()
