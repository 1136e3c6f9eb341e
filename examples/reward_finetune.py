"""LL-Score as a reward: fine-tune a restoration network on it, and check that it is not being hacked.

1. Pretrain a small residual CNN with an L1 loss to the clean reference on LL-Bench-mini training sources.
2. Fine-tune a copy of it with reward = LL-Score quality − λ·P(hallucination), two ways, both with a
   low-pass fidelity term to the degraded input (free to change noise and texture, not content):
   (a) differentiable: back-propagate the reward through the frozen scorer to the restored pixels;
   (b) sampling, for generators you cannot differentiate through: N stochastic outputs per input, rewards
       turned into group-relative advantages (GRPO-style, no critic), and the evolution-strategies form of
       the policy gradient of a smooth Gaussian policy whose mean is the restorer's output.
3. Report on held-out sources, before and after: reward, LL-Score, P(hallucination), the utility that
   LL-Bench-mini's simulated people perceive (see `utility`), PSNR to the clean reference. A variant whose
   reward rises while the utility falls is flagged as reward hacking.

CPU (after the main job, which writes the bench, the split and the tiny LL-Score):
    python examples/reward_finetune.py
GPU, a real LL-Score and your own restorer (a factory returning an nn.Module from (n, 3, H, W) in [0, 1]):
    python examples/reward_finetune.py --scorer USER/llscore --dtype bfloat16 --device cuda \
        --restorer my_package.models:build_restorer --bench /data/LL-Bench --prepared /data/llbench_prepared \
        --data-config configs/data/llbench.yaml --image-size 512
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # restoration_reward beside this script

from restoration_reward.data import Sources, bench_restorers, load_sources, read_square
from restoration_reward.finetune import (
    DIFFERENTIABLE,
    SAMPLING,
    VARIANTS,
    FinetuneSettings,
    differentiable_finetune,
    fidelity,
    group_advantages,
    sampling_finetune,
)
from restoration_reward.judging import eight_bit, evaluate_outputs, hacking_verdicts, utility
from restoration_reward.restorer import ResidualCNN, build_restorer, pretrain

from llscore import LLScore, LLScoreReward
from llscore.data.config import DataConfig
from llscore.errors import EXPECTED_ERRORS, add_debug_flag, fail
from llscore.files import claim_folder, write_atomic
from llscore.hub_kernels import keep_bitsandbytes_off_the_hub
from llscore.markdown import markdown_table
from llscore.report import check_report_folder, save_figure

__all__ = [  # what tests/test_reward_finetune.py reaches through this script, beside its command line
    "DIFFERENTIABLE",
    "SAMPLING",
    "FinetuneSettings",
    "ResidualCNN",
    "Sources",
    "differentiable_finetune",
    "fidelity",
    "group_advantages",
    "hacking_verdicts",
    "load_sources",
    "main",
    "parse_args",
    "pretrain",
    "read_square",
    "run",
    "sampling_finetune",
    "utility",
]

DEFAULT_TASKS = ("noise", "jpeg", "defocus_blur", "low_resolution")


def plot_curves(histories: dict[str, list[float]], pretrain_losses: list[float], path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(pretrain_losses)
    axes[0].set(title="pretraining (L1 to the clean reference)", xlabel="step", ylabel="L1")
    for name, history in histories.items():
        line = axes[1].plot(history, alpha=0.3)[0]
        smooth = pd.Series(history).rolling(10, min_periods=1).mean()
        axes[1].plot(smooth, color=line.get_color(), label=f"{name} (10-step mean)")
    axes[1].set(title="training-batch reward during fine-tuning", xlabel="step", ylabel="reward")
    axes[1].legend()
    save_figure(figure, path)


def plot_examples(outputs: dict[str, torch.Tensor], sources: Sources, path: Path, n: int = 4) -> None:
    columns = {"degraded input": sources.degraded, **outputs, "clean reference": sources.clean}
    n = min(n, len(sources.ids))
    figure, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 2.3 * n), squeeze=False)
    for row in range(n):
        for col, (name, images) in enumerate(columns.items()):
            axes[row, col].imshow(eight_bit(images[row].detach()).cpu().permute(1, 2, 0).numpy())
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(name, fontsize=8)
        axes[row, 0].set_ylabel(sources.ids[row], fontsize=8)
    save_figure(figure, path)


PRETRAINED = "pretrained (L1)"
CHOICES = {"differentiable": DIFFERENTIABLE, "sampling": SAMPLING}


def run(args) -> dict:
    check_report_folder(args.out, args.overwrite)  # before minutes of work, not after
    claim_folder(args.out, "reward_finetune.py")
    device = torch.device(args.device)
    data_config = DataConfig.from_yaml(args.data_config) if args.data_config else None
    sources = load_sources(args.bench, args.prepared, args.tasks, args.image_size, data_config)
    sources = {name: part.to(device) for name, part in sources.items()}
    train, held_out = sources["train"], sources["held_out"]
    print(f"{len(train.ids)} training and {len(held_out.ids)} held-out sources of tasks {list(args.tasks)}")
    scorer = LLScore.from_pretrained(args.scorer, dtype=args.dtype, device=device)
    reward = LLScoreReward(
        scorer, hallucination_weight=args.hallucination_weight, batch_size=args.score_batch
    )

    torch.manual_seed(args.seed)  # here: loading a scorer may draw random numbers (LoRA, new token rows)
    restorer = build_restorer(args.restorer).to(device)
    pretrain_losses = pretrain(
        restorer, train, args.pretrain_steps, args.pretrain_lr, args.pretrain_batch, args.seed
    )
    settings = FinetuneSettings(
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        fidelity_weight=args.fidelity_weight,
        fidelity_tolerance=args.fidelity_tolerance,
        group_size=args.group_size,
        sigma=args.sigma,
        seed=args.seed,
    )
    restorers = {PRETRAINED: restorer}
    histories = {}
    for name in VARIANTS if args.variant == "both" else [CHOICES[args.variant]]:
        finetune = VARIANTS[name]
        restorers[name] = copy.deepcopy(restorer)
        histories[name] = finetune(restorers[name], reward, train, settings)

    with torch.no_grad():
        outputs = {name: model(held_out.degraded) for name, model in restorers.items()}
    rows = {
        "degraded input (no restoration)": held_out.degraded,
        **outputs,
        "clean reference": held_out.clean,
    }
    per_image = pd.concat(
        [evaluate_outputs(images, held_out, reward).assign(output=name) for name, images in rows.items()],
        ignore_index=True,
    )
    columns = ["reward", "llscore", "p_hallucination", "utility", "psnr"]
    summary = per_image.groupby("output", sort=False)[columns].mean()
    verdicts = hacking_verdicts(per_image, PRETRAINED, list(histories))

    out = Path(args.out)
    write_atomic(out / "per_image.csv", per_image.to_csv(index=False, float_format="%.5f"))
    plot_curves(histories, pretrain_losses, out / "training_curves.png")
    plot_examples(outputs, held_out, out / "examples.png")
    lines = [
        "# Reward fine-tuning with LL-Score",
        "",
        f"Scorer `{args.scorer}`; reward = quality − {args.hallucination_weight}·P(hallucination); "
        f"tasks {', '.join(args.tasks)}; {len(train.ids)} training / {len(held_out.ids)} held-out sources.",
        "",
        "Held-out means (utility: what LL-Bench-mini's simulated people perceive beside the input and the "
        "bench's own restorations, without a hallucination charge since no mask is known for new outputs; "
        "PSNR to the clean reference):",
        "",
        markdown_table(summary.reset_index()),
        "",
    ]
    context = bench_restorers(args.bench, held_out.ids, data_config)
    if context is not None:
        lines += [
            "LL-Bench-mini's own restorers on the same sources (ground_truth.csv, hallucinations charged), for scale:",
            "",
            markdown_table(context),
            "",
        ]
    for name, verdict in verdicts.items():
        flag = (
            "**REWARD HACKING**: reward rose while utility fell"
            if verdict["reward_hacking"]
            else "no hacking flag"
        )
        lines.append(
            f"- {name}: reward {verdict['reward_change']:+.3f}, utility {verdict['utility_change']:+.4f} "
            f"vs {PRETRAINED}; reward up and utility down on "
            f"{verdict['share_reward_up_utility_down']:.0%} of held-out sources → {flag}"
        )
    write_atomic(out / "report.md", "\n".join(lines) + "\n")
    metrics = {
        "summary": summary.to_dict(orient="index"),
        "verdicts": verdicts,
        "bench_restorers": None if context is None else context.to_dict(orient="records"),
        "training_reward": histories,
        "settings": vars(args),
    }
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    print("\n".join(lines))
    print(f"wrote {out}/report.md, metrics.json, per_image.csv, training_curves.png, examples.png")
    return metrics


def _at_least_two(value: str) -> int:
    if int(value) < 2:
        raise argparse.ArgumentTypeError(f"a group needs at least 2 samples to compare, got {value}")
    return int(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scorer", default="checkpoints/llscore-tiny", help="LL-Score checkpoint or Hub id")
    parser.add_argument("--bench", default="data/llbench_mini", help="bench with degraded + reference images")
    parser.add_argument(
        "--prepared", default="data/llbench_mini_prepared", help="its prepared dataset (split)"
    )
    parser.add_argument("--data-config", default=None, help="column map of a real release (configs/data/)")
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--image-size", type=int, default=112, help="inputs are resized to this square size")
    parser.add_argument("--restorer", default=None, help="module:function building the restorer")
    parser.add_argument("--variant", choices=("both", *CHOICES), default="both")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--pretrain-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=FinetuneSettings.steps)
    parser.add_argument("--lr", type=float, default=FinetuneSettings.lr)
    parser.add_argument("--batch-size", type=int, default=FinetuneSettings.batch_size)
    parser.add_argument("--fidelity-weight", type=float, default=FinetuneSettings.fidelity_weight)
    parser.add_argument("--fidelity-tolerance", type=float, default=FinetuneSettings.fidelity_tolerance)
    parser.add_argument("--group-size", type=_at_least_two, default=FinetuneSettings.group_size)
    parser.add_argument("--sigma", type=float, default=FinetuneSettings.sigma)
    parser.add_argument("--hallucination-weight", type=float, default=1.0)
    parser.add_argument("--score-batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/reward_finetune")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    keep_bitsandbytes_off_the_hub()  # before loading the scorer imports bitsandbytes (docs/architecture.md)
    try:
        run(args)
    except (*EXPECTED_ERRORS, ValueError) as err:
        return fail("reward_finetune.py", err, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
