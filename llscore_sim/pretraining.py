"""Low-level pretraining of a tiny base model, so that it arrives knowing low-level vision as a real base does.

A real Qwen-VL has seen billions of images before anyone fine-tunes it on human preferences; a tiny random one
has seen none, and on 2 CPU cores it cannot learn what noise, blur or a colour cast look like from a few hundred
human-labelled sources (docs/training.md). This module gives the tiny base that prior with no human label and
no scene of LL-Bench-mini:

- images: dead-leaves scenes (`llscore_sim.dead_leaves`), degraded by LL-Bench-mini's 16 task models and
  restored by restoration models with random failure profiles (`llscore_sim.mini_bench.restorers`);
- stage 1, the vision tower: predicts objective properties of single images (noise level, fine detail,
  distortion to the clean scene, mean colour, the degradation type) through a linear head, and compares
  contents: from each visual token of a restoration beside the same token of its degraded input, which tokens
  show content the input does not support (the hallucination mask), through a small head; both heads are
  discarded;
- stage 2, the whole model: answers low-level questions about (degraded input, restoration) pairs through the
  scorer and `LLScoreTrainer`: how faithfully the restoration recovers the clean scene (`clean_fidelity`,
  which needs the clean scene and so is objective, not a judgement) and whether it changed content.
The questions are not LL-Score's (`PRETRAINING_CONTRACT`): the human-preference fine-tuning still has to learn
what its own questions ask, and the pretrained base scores them zero-shot only as well as what it learned
transfers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from PIL import Image
from scipy import ndimage
from scipy.stats import norm, spearmanr
from skimage.metrics import structural_similarity
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from llscore.api import LLScore
from llscore.config import LLScoreTrainingArguments
from llscore.data.samples import soft_targets
from llscore.families import family_of
from llscore.images import read_image
from llscore.prompts import LLScoreConfig, PromptContract, ResolutionRule
from llscore.trainer import LLScoreTrainer
from llscore_sim.dead_leaves import dead_leaves
from llscore_sim.mini_bench.degradations import TASKS, degrade, luminance, to_uint8
from llscore_sim.mini_bench.perception import noise_level
from llscore_sim.mini_bench.restorers import Model, clean_fidelity, restore

logger = logging.getLogger(__name__)

PRETRAINING_CONTRACT = PromptContract(
    quality_questions=(
        "How faithfully does the restored image recover the clean scene behind the degraded input?",
        "How close is the restored image to an undistorted photograph of the same scene?",
        "Rate how much of the degradation the restoration removed without damaging the content.",
    ),
    quality_stem="The fidelity of the restored image is",
    hallucination_questions=(
        "Does the restored image change content that the degraded input shows?",
        "Is any region of the restored image different in content from the degraded input?",
    ),
)
"""Low-level questions with LL-Score's answer words, asked only during pretraining."""
FIDELITY_SCALE = 0.05
"""Fidelity difference at one standard deviation of the Thurstone pair target."""


@dataclass(frozen=True)
class PretrainingSettings:
    """Sizes and schedule of the two stages (the defaults made the shipped tiny base; docs/training.md)."""

    sources: int = 4000
    restorations_per_source: int = 5
    image_size: int = 112
    vision_steps: int = 4000
    vision_batch_size: int = 32
    vision_learning_rate: float = 2e-3
    steps: int = 10000
    batch_size: int = 8
    learning_rate: float = 1e-3
    comparison_weight: float = 1.0
    seed: int = 0


def random_model(rng: np.random.Generator) -> Model:
    """A restoration model with a random failure profile, of either family (editors also re-render tone)."""
    family = "lgm" if rng.random() < 0.5 else "conventional"
    return Model(
        "random",
        family,
        residual=rng.uniform(0.0, 0.9),
        smooth=rng.uniform(0.3, 1.6) if rng.random() < 0.5 else 0.0,
        sharpen=rng.uniform(0.2, 1.2) if rng.random() < 0.5 else 0.0,
        colour=rng.uniform(0.0, 0.08),
        tone=rng.uniform(0.0, 0.12) if family == "lgm" else 0.0,
        texture=rng.uniform(0.01, 0.05) if rng.random() < 0.5 else 0.0,
        hallucination=0.35,
    )


def synthetic_pool(out: str | Path, settings: PretrainingSettings) -> pd.DataFrame:
    """Dead-leaves sources, their degradations and random restorations as PNG files under `out`.

    One row per image: source, kind (clean / degraded / restored), path, task, and for restorations their
    fidelity to the clean scene, whether they hallucinate and the path of their hallucination mask (white where
    the content is not supported by the degraded input).
    """
    out = Path(out)
    index_file, key_file = out / "pool.csv", out / "pool.key"  # the key is written last: a whole pool
    key = f"{settings.sources} {settings.restorations_per_source} {settings.image_size} {settings.seed}"
    if key_file.is_file() and key_file.read_text() == key:
        return pd.read_csv(index_file, keep_default_na=False, na_values={"fidelity": [""]})
    key_file.unlink(missing_ok=True)  # images about to be redrawn no longer match the old key
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in tqdm(range(settings.sources), desc="synthetic low-level pool", unit="source"):
        rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(index,)))
        clean = dead_leaves(rng, settings.image_size)
        task = TASKS[rng.integers(len(TASKS))]
        degraded = degrade(clean, task, rng.uniform(0.2, 1.0), rng)
        images = [("clean", clean, np.nan, None), ("degraded", degraded, np.nan, None)]
        for _ in range(settings.restorations_per_source):
            restoration = restore(random_model(rng), clean, degraded, task, dead_leaves, rng)
            fidelity = clean_fidelity(restoration, clean)
            images.append(("restored", restoration.image, fidelity, restoration))
        for k, (kind, image, fidelity, restoration) in enumerate(images):
            path = out / f"{index:05d}_{k}_{kind}.png"
            Image.fromarray(to_uint8(image)).save(path)
            mask_path, hallucinated = "", 0
            if restoration is not None:
                mask_path, hallucinated = (
                    str(out / f"{index:05d}_{k}_mask.png"),
                    int(bool(restoration.hallucination)),
                )
                Image.fromarray(restoration.mask.astype(np.uint8) * 255).save(mask_path)
            rows.append((index, kind, str(path), task, fidelity, hallucinated, mask_path))
    pool = pd.DataFrame(
        rows, columns=["source", "kind", "path", "task", "fidelity", "hallucinated", "mask_path"]
    )
    pool.to_csv(index_file, index=False)
    key_file.write_text(key)
    return pool


def image_attributes(image: np.ndarray, clean: np.ndarray) -> list[float]:
    """Objective properties of one image: log noise level, log fine detail, distortion to the clean scene
    (1 − SSIM), the two chroma axes of its mean colour and its mean luminance."""
    grey = luminance(image)
    detail = np.abs(ndimage.gaussian_filter(grey, 0.7) - ndimage.gaussian_filter(grey, 1.5)).mean()
    distortion = 1.0 - structural_similarity(image, clean, data_range=1.0, channel_axis=-1)
    red, green, blue = image.reshape(-1, 3).mean(axis=0)
    return [
        float(np.log(noise_level(image) + 3e-3)),
        float(np.log(detail + 1e-3)),
        float(distortion),
        float(red - green),
        float(blue - green),
        float(grey.mean()),
    ]


def _pixels(path: str) -> np.ndarray:
    return np.asarray(read_image(path), dtype=np.float32) / 255.0


def token_fractions(mask: np.ndarray, token: int) -> np.ndarray:
    """The fraction of each visual token's `token` × `token` pixels under `mask`, in the tower's raster order."""
    rows, cols = mask.shape[0] // token, mask.shape[1] // token
    return mask[: rows * token, : cols * token].reshape(rows, token, cols, token).mean((1, 3)).ravel()


def pretrain_vision_tower(model, processor, pool: pd.DataFrame, settings: PretrainingSettings) -> dict:
    """Stage 1: train the vision tower (and its merger) to expose objective image properties and to compare the
    content of a restoration's tokens with its input's; returns held-out measurements (the last 10% of sources
    are held out): the correlation of each property, and the AUROC of the comparison head for tokens that are
    mostly hallucinated and for whole images (their most changed token)."""
    clean = {row.source: _pixels(row.path) for row in pool[pool.kind == "clean"].itertuples()}
    images, targets, task = [], [], []
    for row in tqdm(pool.itertuples(), total=len(pool), desc="image properties"):
        pixels = _pixels(row.path)
        images.append(Image.fromarray(to_uint8(pixels)))
        targets.append(image_attributes(pixels, clean[row.source]))
        task.append(TASKS.index(row.task) if row.kind == "degraded" else -100)
    targets = np.asarray(targets, dtype=np.float32)
    targets = torch.from_numpy((targets - targets.mean(0)) / (targets.std(0) + 1e-6))
    task = torch.tensor(task)
    held_out = pool.source.to_numpy() >= int(0.9 * settings.sources)
    train_index, test_index = np.flatnonzero(~held_out), np.flatnonzero(held_out)

    image_processor = processor.image_processor
    family = family_of(model.config)
    token = family.token_side(image_processor)
    restored = np.flatnonzero(pool.kind.to_numpy() == "restored")
    degraded_row = {row.source: i for i, row in enumerate(pool.itertuples()) if row.kind == "degraded"}
    input_of = np.array([degraded_row[s] for s in pool.source.to_numpy()[restored]])
    changed = torch.tensor(
        np.stack(
            [token_fractions(_pixels(p)[..., 0] > 0.5, token) for p in pool.mask_path.to_numpy()[restored]]
        ),
        dtype=torch.float32,
    )
    pair_train, pair_test = np.flatnonzero(~held_out[restored]), np.flatnonzero(held_out[restored])

    visual = family.vision_tower_of(model)
    width = model.config.text_config.hidden_size  # what the merger hands the LLM per visual token
    head = torch.nn.Linear(width, targets.shape[1] + len(TASKS))
    comparison = torch.nn.Sequential(
        torch.nn.Linear(3 * width, width), torch.nn.GELU(), torch.nn.Linear(width, 1)
    )
    optimiser = torch.optim.AdamW(
        [*visual.parameters(), *head.parameters(), *comparison.parameters()], lr=settings.vision_learning_rate
    )
    schedule = get_cosine_schedule_with_warmup(
        optimiser, max(1, settings.vision_steps // 20), settings.vision_steps
    )
    size = family.image_size(ResolutionRule(settings.image_size**2 // 4, settings.image_size**2))
    rng = np.random.default_rng(settings.seed)

    def tokens(index) -> torch.Tensor:
        batch = [images[i] for i in index]
        inputs = image_processor(batch, return_tensors="pt", size=size)
        features = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        return features.reshape(len(batch), -1, features.shape[-1])

    def predict(index) -> torch.Tensor:
        return head(tokens(index).mean(1))

    def compare(pairs) -> torch.Tensor:
        """Logits, per token of each restoration in `pairs`, that its content is not in its degraded input."""
        features = tokens(np.concatenate([restored[pairs], input_of[pairs]]))
        ours, theirs = features[: len(pairs)], features[len(pairs) :]
        return comparison(torch.cat([ours, theirs, ours - theirs], -1)).squeeze(-1)

    def loss(index, output) -> torch.Tensor:
        regression = torch.nn.functional.mse_loss(output[:, : targets.shape[1]], targets[index])
        labels = task[index]
        if (labels < 0).all():
            return regression
        return regression + 0.3 * torch.nn.functional.cross_entropy(output[:, targets.shape[1] :], labels)

    model.train()
    for _ in tqdm(range(settings.vision_steps), desc="stage 1: vision tower"):
        index = rng.choice(train_index, settings.vision_batch_size)
        pairs = rng.choice(pair_train, max(1, settings.vision_batch_size // 4))
        value = loss(index, predict(index)) + settings.comparison_weight * (
            torch.nn.functional.binary_cross_entropy_with_logits(compare(pairs), changed[pairs])
        )
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        output = torch.cat([predict(test_index[i : i + 64]) for i in range(0, len(test_index), 64)])
        changed_logits = torch.cat([compare(pair_test[i : i + 32]) for i in range(0, len(pair_test), 32)])
    names = ("log_noise", "log_detail", "distortion", "red_green", "blue_green", "luminance")
    measured = {
        name: float(np.corrcoef(output[:, k].numpy(), targets[test_index, k].numpy())[0, 1])
        for k, name in enumerate(names)
    }
    hallucinated = pool.hallucinated.to_numpy()[restored[pair_test]]
    measured["changed_token_auroc"] = float(
        roc_auc_score(changed[pair_test].numpy().ravel() > 0.5, changed_logits.numpy().ravel())
    )
    measured["hallucinated_image_auroc"] = float(
        roc_auc_score(hallucinated, changed_logits.max(1).values.numpy())
    )
    return measured


def fidelity_pairs(pool: pd.DataFrame) -> Dataset:
    """Every pair of restorations of one source, in `PreparedData.pair_examples`' format: soft targets from
    each restoration's fidelity mapped onto the level weights, P(A better) from their fidelity difference."""
    degraded = pool[pool.kind == "degraded"].set_index("source").path
    restored = pool[pool.kind == "restored"]
    low, high = np.quantile(restored.fidelity, [0.01, 0.99])
    weights = np.asarray(PRETRAINING_CONTRACT.level_weights)
    level = np.clip(
        weights.min() + np.ptp(weights) * (restored.fidelity - low) / (high - low), *weights[[-1, 0]]
    )
    target = dict(
        zip(restored.path, soft_targets(level, np.full(len(restored), 0.3), weights).tolist(), strict=True)
    )
    rows = []
    for source, group in restored.groupby("source"):
        items = list(group.itertuples())
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                rows.append(
                    {
                        "degraded": degraded[source],
                        "restored_a": a.path,
                        "restored_b": b.path,
                        "p_a_better": float(norm.cdf((a.fidelity - b.fidelity) / FIDELITY_SCALE)),
                        "soft_target_a": target[a.path],
                        "soft_target_b": target[b.path],
                        "hallucination_a": float(a.hallucinated),
                        "hallucination_b": float(b.hallucinated),
                    }
                )
    frame = pd.DataFrame(rows)
    frame.insert(0, "example_id", np.arange(len(frame)))
    return Dataset.from_pandas(frame, preserve_index=False)


def pretrain_answers(model, processor, pool: pd.DataFrame, settings: PretrainingSettings, work_dir: Path):
    """Stage 2: the whole model answers the pretraining questions, through the scorer's own trainer; returns its
    training loss and, on the held-out sources (the last 10%), how well its answers follow the objective targets:
    within-source SRCC of the quality answer with fidelity, and the AUROC of P(Yes) for hallucinated outputs."""
    held_out = pool.source >= int(0.9 * settings.sources)
    config = LLScoreConfig(
        prompts=PRETRAINING_CONTRACT,
        resolution=ResolutionRule(settings.image_size**2 // 4, settings.image_size**2),
    )
    args = LLScoreTrainingArguments(
        quality_kl=1.0,
        pair_fidelity=1.0,
        hallucination_bce=1.0,
        level_ce=0.0,
        output_dir=str(work_dir / "stage2"),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=50,
        logging_steps=100,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=settings.seed,
    )
    trainer = LLScoreTrainer(
        model=model,
        args=args,
        train_dataset=fidelity_pairs(pool[~held_out]),
        processing_class=processor,
        llscore_config=config,
    )
    loss = trainer.train().training_loss
    restored = pool[held_out & (pool.kind == "restored")].copy()
    degraded = pool[pool.kind == "degraded"].set_index("source").path
    model.eval()
    scores = LLScore(model, processor, config).score(
        list(restored.path), degraded=list(degraded[restored.source]), batch_size=32, progress=True
    )
    restored["score"], restored["p_hallucination"] = scores.score, scores.p_hallucination
    within = [spearmanr(group.score, group.fidelity)[0] for _, group in restored.groupby("source")]
    return {
        "stage2_training_loss": loss,
        "stage2_held_out": {
            "within_source_srcc_with_fidelity": float(np.nanmean(within)),
            "hallucination_auroc": float(roc_auc_score(restored.hallucinated, restored.p_hallucination)),
        },
    }


def pretrain_tiny_base(
    out: str | Path,
    work_dir: str | Path,
    family: str = "qwen2_5_vl",
    settings: PretrainingSettings | None = None,
    shape: dict | None = None,
    pool_dir: str | Path | None = None,
) -> dict:
    """Build a tiny random `family` base, pretrain it (both stages) and save it to `out`; returns measurements.

    `shape` passes sizes to `build_tiny_checkpoint` (width, layers, vision_width, vision_layers, merge_size);
    none gives the shipped shape. The synthetic images go to `pool_dir` (default `work_dir/pool`); a pool already
    there with the same settings is reused, so that shapes can be pretrained on the same images."""
    from transformers import AutoModelForImageTextToText

    from llscore.modeling import load_processor
    from llscore_sim.tiny import build_tiny_checkpoint

    settings = settings or PretrainingSettings()
    work_dir = Path(work_dir)
    base = build_tiny_checkpoint(family, work_dir / "random_base", seed=settings.seed, **(shape or {}))
    torch.manual_seed(settings.seed)
    model = AutoModelForImageTextToText.from_pretrained(str(base))
    processor = load_processor(base, LLScoreConfig(prompts=PRETRAINING_CONTRACT))
    pool = synthetic_pool(pool_dir or work_dir / "pool", settings)
    tower = pretrain_vision_tower(model, processor, pool, settings)
    logger.info("stage 1 held-out correlations: %s", tower)
    answers = pretrain_answers(model, processor, pool, settings, work_dir)
    logger.info("stage 2: %s", answers)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return {"stage1_held_out": tower, **answers}
