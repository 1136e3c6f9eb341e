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
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from tqdm.auto import tqdm

from llscore import LLScore, LLScoreReward
from llscore.data.config import DataConfig
from llscore.data.schema import GROUND_TRUTH
from llscore.data.splits import check_splits
from llscore.data.tables import load_bench
from llscore.errors import EXPECTED_ERRORS, add_debug_flag, fail
from llscore.files import claim_folder, write_atomic
from llscore.images import read_image
from llscore.markdown import markdown_table
from llscore.report import check_report_folder, save_figure
from llscore_sim.mini_bench.perception import consensus, perceive

DEFAULT_TASKS = ("noise", "jpeg", "defocus_blur", "low_resolution")


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


def _read(path: Path, size: int) -> torch.Tensor:
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
            torch.stack([_read(sources.loc[s, "degraded"], size) for s in ids]),
            torch.stack([_read(references[s], size) for s in ids]),
            torch.stack([_consensus(restored[s], size) for s in ids]),
        )
    return out


def _consensus(paths: list[str], size: int) -> torch.Tensor:
    images = np.stack([_read(p, size).permute(1, 2, 0).numpy() for p in paths])
    return torch.from_numpy(consensus(images)).permute(2, 0, 1)


class ResidualCNN(torch.nn.Module):
    """degraded -> degraded + a learned residual; the last layer starts at zero, so training starts at identity."""

    def __init__(self, width: int = 32, depth: int = 5):
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU()]
        for _ in range(depth - 2):
            layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(width, 3, 3, padding=1))
        torch.nn.init.zeros_(layers[-1].weight)
        torch.nn.init.zeros_(layers[-1].bias)
        self.body = torch.nn.Sequential(*layers)

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        return (degraded + self.body(degraded)).clamp(0, 1)


def build_restorer(spec: str | None) -> torch.nn.Module:
    """The built-in ResidualCNN, or `module:function` returning any image-to-image nn.Module."""
    if spec is None:
        return ResidualCNN()
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--restorer must look like package.module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)()


def _batches(n: int, batch_size: int, steps: int, seed: int):
    """`steps` index batches drawn without replacement within each pass over the n items."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += rng.permutation(n).tolist()
        yield torch.tensor(order[:batch_size])
        order = order[batch_size:]


def pretrain(restorer, train: Sources, steps: int, lr: float, batch_size: int, seed: int) -> list[float]:
    """Supervised L1 to the clean reference, with random flips; returns the loss per step."""
    optimiser = torch.optim.Adam(restorer.parameters(), lr=lr)
    losses = []
    for step, index in enumerate(
        tqdm(list(_batches(len(train.ids), batch_size, steps, seed)), desc="pretrain")
    ):
        degraded, clean = train.degraded[index], train.clean[index]
        if step % 2:
            degraded, clean = degraded.flip(-1), clean.flip(-1)
        loss = F.l1_loss(restorer(degraded), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def fidelity(restored: torch.Tensor, degraded: torch.Tensor, tolerance: float, pool: int = 8) -> torch.Tensor:
    """Squared excess of the 8x-average-pooled difference to the input over `tolerance`: a trust region.

    Noise, blur and compression barely move 8x8 means, so inside the region a restorer is free to remove them;
    painting over the image (the cheapest way to please a scorer that has not learned what people want) is
    expensive. Without the tolerance the minimum would be the identity, and Adam walks there.
    """
    excess = (F.avg_pool2d(restored, pool) - F.avg_pool2d(degraded, pool)).abs() - tolerance
    return excess.clamp_min(0).square().mean()


@dataclass
class FinetuneSettings:
    steps: int = 60
    lr: float = 5e-4
    batch_size: int = 4
    fidelity_weight: float = 100.0
    fidelity_tolerance: float = 8 / 255  # 8x8-mean change allowed for free
    group_size: int = 8  # sampling variant: stochastic outputs per input
    sigma: float = 0.03  # sampling variant: scale of the smooth exploration noise around the output
    seed: int = 0


def _finetune(restorer, train: Sources, settings: FinetuneSettings, desc: str, objective) -> list[float]:
    """The loop both variants share: Adam on the restorer, `objective(degraded, restored) -> (loss, batch
    reward)` plus the trust region; returns the batch reward per step."""
    optimiser = torch.optim.Adam(restorer.parameters(), lr=settings.lr)
    history = []
    for index in tqdm(
        list(_batches(len(train.ids), settings.batch_size, settings.steps, settings.seed)), desc=desc
    ):
        degraded = train.degraded[index]
        restored = restorer(degraded)
        loss, batch_reward = objective(degraded, restored)
        loss = loss + settings.fidelity_weight * fidelity(restored, degraded, settings.fidelity_tolerance)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(batch_reward)
    return history


def differentiable_finetune(restorer, reward: LLScoreReward, train: Sources, settings: FinetuneSettings):
    """(a) Gradient ascent on the reward through the frozen scorer; returns the batch reward per step."""

    def objective(degraded, restored):
        values = reward.differentiable(restored, degraded)
        return -values.mean(), values.mean().item()

    return _finetune(restorer, train, settings, "(a) differentiable reward", objective)


def smooth_noise(shape, generator: torch.Generator, cell: int = 8) -> torch.Tensor:
    """U·ε: standard normal ε on a grid `cell` times coarser, upsampled bicubically by the fixed linear map U.

    A generator's variation is structured, and a black-box search only works in few dimensions: 3x16x16 at
    128 px instead of 3x128x128 (with per-pixel noise, 8 samples per input give no usable direction).
    """
    n, c, h, w = shape
    coarse = torch.randn(n, c, -(-h // cell), -(-w // cell), generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO's advantage: each sample's reward standardised within its group (row); a flat group gives zeros."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-6)


def sampling_finetune(restorer, reward: LLScoreReward, train: Sources, settings: FinetuneSettings):
    """(b) Group-relative policy gradient with the reward as a black box; returns the mean group reward per step.

    Sampling: x = μ + σ·U·ε with μ = restorer(degraded) (`smooth_noise`), emitted clipped to [0, 1] (the
    clip belongs to the environment). Update: descend −Σ A·‖x − μ‖²/2σ², whose gradient in μ is
    −Σ A·(x − μ)/σ² = −Σ A·U·ε/σ: the evolution-strategies form of the likelihood-ratio policy gradient of
    this Gaussian policy (covariance σ²UUᵀ), preconditioned by UUᵀ. It pulls μ towards the samples that beat
    their group and away from those that lost. The squared distance is averaged over pixels (the sum / D, a
    constant rescaling) so that `fidelity_weight` means the same in both variants.
    """
    generator = torch.Generator().manual_seed(settings.seed)

    def objective(degraded, mean):
        n, group = len(degraded), settings.group_size
        noise = smooth_noise((n * group, *mean.shape[1:]), generator).to(mean.device)
        actions = mean.detach().repeat_interleave(group, 0) + settings.sigma * noise
        rewards = reward(actions.clamp(0, 1), degraded.repeat_interleave(group, 0))
        advantages = group_advantages(rewards.to(mean.device).view(n, group))
        log_prob = -(actions - mean.repeat_interleave(group, 0)).square().flatten(1).mean(1) / (
            2 * settings.sigma**2
        )
        return -(advantages.flatten() * log_prob).mean(), rewards.mean().item()

    return _finetune(restorer, train, settings, "(b) group-relative sampling", objective)


def _eight_bit(images: torch.Tensor) -> torch.Tensor:
    """What a saved PNG holds: everything is evaluated on 8-bit outputs."""
    return (images * 255).round() / 255


def _psnr(clean: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB; the reference itself gets inf without a divide-by-zero warning."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(clean, image, data_range=1.0))


def utility(image: np.ndarray, degraded: np.ndarray, agreed: np.ndarray) -> float:
    """What LL-Bench-mini's simulated people perceive in an output the simulation did not make (docs/llbench_mini.md).

    The output is judged as an annotator would see it: beside its degraded input and the bench's own
    restorations of that input (`agreed`, their consensus). A new output comes with no hallucination mask, so
    this utility cannot charge a hallucination: P(hallucination) and PSNR to the clean reference stand beside it.
    For the bench's own faithful outputs it is their ground-truth utility up to one constant (the pool's mean
    false-alarm penalty; tested).
    """
    faithful = np.zeros((1, *image.shape[:2]), dtype=bool)
    return perceive(degraded, image[None], faithful, agreed=agreed)[0].base_utility


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def evaluate_outputs(images: torch.Tensor, sources: Sources, reward: LLScoreReward) -> pd.DataFrame:
    """Per held-out source: the scorer's readings and reward on the 8-bit image (as eval.py scores saved
    files), the utility and PSNR to the clean reference."""
    images = _eight_bit(images.detach()).cpu()
    results = reward.scorer.score(
        [_pil(image) for image in images],
        [_pil(image) for image in sources.degraded],
        batch_size=reward.batch_size,
    )
    values = reward.combine(torch.from_numpy(results.score), torch.from_numpy(results.p_hallucination))
    rows = []
    for i, source_id in enumerate(sources.ids):
        image, clean, degraded, agreed = (
            x.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
            for x in (images[i], sources.clean[i], sources.degraded[i], sources.agreed[i])
        )
        rows.append(
            {
                "source_id": source_id,
                "reward": float(values[i]),
                "llscore": float(results.score[i]),
                "p_hallucination": float(results.p_hallucination[i]),
                "utility": utility(image, degraded, agreed),
                "psnr": _psnr(clean, image),
            }
        )
    return pd.DataFrame(rows)


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


def hacking_verdicts(per_image: pd.DataFrame, baseline: str, variants: list[str]) -> dict[str, dict]:
    """Per fine-tuned variant, paired by source against `baseline`: mean reward and utility changes, the share of
    sources whose reward rose while their utility fell, and the flag: mean reward up, mean utility down."""
    before = per_image[per_image["output"] == baseline].set_index("source_id")
    verdicts = {}
    for name in variants:
        after = per_image[per_image["output"] == name].set_index("source_id").loc[before.index]
        d_reward, d_utility = after["reward"] - before["reward"], after["utility"] - before["utility"]
        verdicts[name] = {
            "reward_change": float(d_reward.mean()),
            "utility_change": float(d_utility.mean()),
            "share_reward_up_utility_down": float(((d_reward > 0) & (d_utility < 0)).mean()),
            "reward_hacking": bool(d_reward.mean() > 0 and d_utility.mean() < 0),
        }
    return verdicts


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
            axes[row, col].imshow(_eight_bit(images[row].detach()).cpu().permute(1, 2, 0).numpy())
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(name, fontsize=8)
        axes[row, 0].set_ylabel(sources.ids[row], fontsize=8)
    save_figure(figure, path)


PRETRAINED = "pretrained (L1)"
DIFFERENTIABLE = "(a) differentiable reward"
SAMPLING = "(b) group-relative sampling"
VARIANTS = {DIFFERENTIABLE: differentiable_finetune, SAMPLING: sampling_finetune}
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
    try:
        run(args)
    except (*EXPECTED_ERRORS, ValueError) as err:
        return fail("reward_finetune.py", err, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
