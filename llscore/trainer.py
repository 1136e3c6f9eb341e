"""`LLScoreTrainer`: a `transformers.Trainer` whose loss and validation both go through `llscore.scoring`.

A training example is one human-compared pair of restorations of the same source, so both images of a pair
are always in the same step: the step scores 2B restorations with the quality question (soft-label KL on each,
Thurstone fidelity on each pair) and, when its weight is non-zero, with the hallucination question (BCE).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from llscore import metrics
from llscore.config import ConfigError, LossWeights, TrainConfig
from llscore.data.tables import DataError
from llscore.evaluator import LLScore
from llscore.files import write_atomic
from llscore.losses import hallucination_bce, level_token_ce, soft_label_kl, thurstone_fidelity
from llscore.modeling import unmatched_lora_targets, write_llscore_config
from llscore.prompts import LLScoreConfig
from llscore.scoring import AnswerReader, InputBuilder, answer_logits, load_image, thurstone_probability

logger = logging.getLogger(__name__)

VALIDATION_REPORT = "validation.json"
"""Written into the run folder by `save_run`: the validation before and after training (bench/learning_curve.py)."""


def pair_examples(prepared, split: str) -> Dataset:
    """Join each human pair with both images' soft targets and hallucination labels."""
    pairs = prepared.pairs[split].to_pandas()
    quality = prepared.quality[split].to_pandas().set_index("image_id")
    hallucination = prepared.hallucination[split].to_pandas().set_index("image_id")["label"]
    frame = pd.DataFrame(
        {
            "example_id": np.arange(len(pairs)),
            "degraded": pairs["degraded"],
            "restored_a": pairs["restored_a"],
            "restored_b": pairs["restored_b"],
            "p_a_better": pairs["p_a_better"].astype("float32"),
            "soft_target_a": quality["soft_target"].reindex(pairs["image_a"]).to_numpy(),
            "soft_target_b": quality["soft_target"].reindex(pairs["image_b"]).to_numpy(),
            "hallucination_a": hallucination.reindex(pairs["image_a"]).to_numpy(dtype="float32"),
            "hallucination_b": hallucination.reindex(pairs["image_b"]).to_numpy(dtype="float32"),
        }
    )
    missing = frame["soft_target_a"].isna() | frame["soft_target_b"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} {split} pairs reference images without a quality score")
    return Dataset.from_pandas(frame, preserve_index=False)


class PairCollator:
    """Rows of `pair_examples` -> processor inputs for both questions plus the targets.

    A batch's paraphrases and augmentations are a function of the seed and its example ids alone (not of any
    RNG state), so a resumed run sees exactly what the uninterrupted run saw. `augment_scale` < 1 crops the
    degraded input and both restorations of a pair with the same random box (side >= scale) and flips them
    together, so the comparison the humans made is preserved while the exact pixels vary.
    """

    def __init__(
        self,
        builder: InputBuilder,
        loss: LossWeights,
        paraphrase: bool,
        seed: int = 0,
        augment_scale: float = 1.0,
    ):
        self.builder = builder
        self.loss = loss
        self.paraphrase = paraphrase
        self.seed = seed
        self.augment_scale = augment_scale

    def _rng(self, rows: list[dict], purpose: str) -> random.Random:
        return random.Random(f"{self.seed}/{purpose}/{','.join(str(r['example_id']) for r in rows)}")

    def _questions(self, rows: list[dict], task: str) -> random.Random | None:
        """The RNG that picks paraphrases (None: the canonical question)."""
        return self._rng(rows, task) if self.paraphrase else None

    def _augmented(self, rows: list[dict]) -> tuple[list, list]:
        """(restored A... + restored B..., degraded ... twice), decoded once for both questions, and cropped and
        flipped alike within each pair when augmenting."""
        if self.augment_scale >= 1.0:
            restored = [load_image(r[k]) for k in ("restored_a", "restored_b") for r in rows]
            return restored, [load_image(r["degraded"]) for r in rows] * 2
        rng = self._rng(rows, "augment")
        triples = []
        for row in rows:
            images = [load_image(row[k]) for k in ("degraded", "restored_a", "restored_b")]
            width, height = images[1].size
            side = rng.uniform(self.augment_scale, 1.0)
            w, h = round(width * side), round(height * side)
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            flip = rng.random() < 0.5
            box = (left, top, left + w, top + h)
            triples.append(
                [
                    (im if im.size == (width, height) else im.resize((width, height))).crop(box)
                    for im in images
                ]
            )
            if flip:
                triples[-1] = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in triples[-1]]
        restored = [t[1] for t in triples] + [t[2] for t in triples]
        return restored, [t[0] for t in triples] * 2

    def __call__(self, rows: list[dict]) -> dict:
        restored, degraded = self._augmented(rows)
        batch = {
            "quality_inputs": self.builder("quality", restored, degraded, self._questions(rows, "quality")),
            "soft_target": torch.tensor(
                [r["soft_target_a"] for r in rows] + [r["soft_target_b"] for r in rows], dtype=torch.float32
            ),
            "p_human": torch.tensor([r["p_a_better"] for r in rows], dtype=torch.float32),
        }
        if self.loss.hallucination_bce:
            batch["hallucination_inputs"] = self.builder(
                "hallucination", restored, degraded, self._questions(rows, "hallucination")
            )
            batch["hallucination_label"] = torch.tensor(
                [r["hallucination_a"] for r in rows] + [r["hallucination_b"] for r in rows],
                dtype=torch.float32,
            )
        return batch


class LLScoreTrainer(Trainer):
    """Trainer with LL-Score's combined loss, per-term logging, scorer-based validation and contract saving."""

    def __init__(
        self,
        *args,
        llscore_config: LLScoreConfig,
        loss: LossWeights,
        val_data: dict | None = None,
        vision_lr_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.llscore_config = llscore_config
        self.vision_lr_scale = vision_lr_scale
        self.loss_weights = loss
        self.val_data = val_data
        self.reader = AnswerReader(self.processing_class.tokenizer, llscore_config)
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_count = 0

    def loss_terms(self, model, inputs) -> dict[str, torch.Tensor]:
        """Each weighted term of docs/training.md, unweighted, from one batch."""
        logits = answer_logits(model, inputs["quality_inputs"])
        reading = self.reader.quality(logits)
        n_pairs = inputs["p_human"].shape[0]
        p_model = thurstone_probability(
            reading.score[:n_pairs], reading.std[:n_pairs], reading.score[n_pairs:], reading.std[n_pairs:]
        )
        terms = {
            "quality_kl": soft_label_kl(reading.level_logits, inputs["soft_target"]),
            "pair_fidelity": thurstone_fidelity(p_model, inputs["p_human"]),
        }
        if self.loss_weights.level_ce:
            terms["level_ce"] = level_token_ce(logits, self.reader.level_ids, inputs["soft_target"])
        if self.loss_weights.hallucination_bce:
            log_odds = self.reader.hallucination_logit(answer_logits(model, inputs["hallucination_inputs"]))
            label = inputs["hallucination_label"]
            known = ~torch.isnan(label)
            terms["hallucination_bce"] = hallucination_bce(log_odds[known], label[known])
        return terms

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = self.loss_terms(model, inputs)
        loss = sum(getattr(self.loss_weights, name) * value for name, value in terms.items())
        for name, value in terms.items():
            self._term_sums[name] += float(value.detach())
        self._term_count += 1
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._term_count and "loss" in logs:
            logs.update({f"loss_{k}": round(v / self._term_count, 5) for k, v in self._term_sums.items()})
            self._term_sums.clear()
            self._term_count = 0
        super().log(logs, *args, **kwargs)

    def create_optimizer(self, model=None):
        """A lower learning rate for the vision tower when `run.vision_lr_scale` < 1 (full fine-tuning)."""
        scale = self.vision_lr_scale
        if scale == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = model or self.model
        decay = set(self.get_decay_parameter_names(model))
        groups = defaultdict(list)
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups[("visual" in name, name in decay)].append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        lr = optimizer_kwargs.pop("lr", self.args.learning_rate)
        self.optimizer = optimizer_cls(
            [
                {
                    "params": params,
                    "lr": lr * (scale if visual else 1.0),
                    "weight_decay": self.args.weight_decay if decay else 0.0,
                }
                for (visual, decay), params in groups.items()
            ],
            lr=lr,
            **optimizer_kwargs,
        )
        return self.optimizer

    def _uses_plain_weights(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(self.model, "peft_config"))

    def _load_plain_weights(self, checkpoint: str) -> None:
        """Reload full weights through `from_pretrained`, which maps saved key names back to module names.

        transformers 5 saves Qwen-VL weights under their original checkpoint names (`model.layers.*`,
        `visual.*`), and `Trainer`'s raw `load_state_dict` on resume / best-model loading then matches no key
        (it only warns). Loading strictly through `from_pretrained` avoids that silent no-op.
        """
        dtype = next(self.model.parameters()).dtype
        saved = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=dtype)
        self.model.load_state_dict(saved.state_dict())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if model is not None or not self._uses_plain_weights():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        return self._load_plain_weights(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if not self._uses_plain_weights():
            return super()._load_best_model()
        return self._load_plain_weights(self.state.best_model_checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            write_llscore_config(self.llscore_config, output_dir or self.args.output_dir)

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Validation SRCC / PLCC / pairwise accuracy, scored by the same code as inference."""
        if self.val_data is None:
            return {}
        results = validate(
            self.model, self.processing_class, self.llscore_config, self.val_data, self.args, self.accelerator
        )
        results = {f"{metric_key_prefix}_{k}": v for k, v in results.items()}
        self.log(results)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, results)
        return results


def validation_items(prepared, split: str, max_images: int | None = None) -> dict:
    """What validation scores: the split's restored images with human scores and labels, and its pairs."""
    quality = prepared.quality[split].to_pandas()
    if max_images is not None and len(quality) > max_images:
        keep = quality["source_id"].drop_duplicates().sample(frac=1.0, random_state=0)
        sources, count = [], 0
        for source in keep:
            sources.append(source)
            count += int((quality["source_id"] == source).sum())
            if count >= max_images:
                break
        quality = quality[quality["source_id"].isin(sources)]
    hallucination = prepared.hallucination[split].to_pandas().set_index("image_id")["label"]
    pairs = prepared.pairs[split].to_pandas()
    pairs = pairs[pairs["image_a"].isin(quality["image_id"]) & pairs["image_b"].isin(quality["image_id"])]
    return {
        "image_id": quality["image_id"].tolist(),
        "source_id": quality["source_id"].to_numpy(),
        "restored": quality["restored"].tolist(),
        "degraded": quality["degraded"].tolist(),
        "human": quality["score"].to_numpy(dtype=float),
        "hallucination": hallucination.reindex(quality["image_id"]).to_numpy(dtype=float),
        "pairs": pairs[["image_a", "image_b", "majority", "p_a_better"]].reset_index(drop=True),
    }


def validate(model, processor, llscore_config: LLScoreConfig, items: dict, args, accelerator=None) -> dict:
    """Score the validation images (sharded over processes) and compare with the humans."""
    was_training = model.training
    model.eval()
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    n = len(items["restored"])
    per_rank = math.ceil(n / world)
    shard = [min(i, n - 1) for i in range(rank * per_rank, (rank + 1) * per_rank)]
    scorer = LLScore(model, processor, llscore_config)
    results = scorer.score(
        [items["restored"][i] for i in shard],
        [items["degraded"][i] for i in shard],
        batch_size=args.per_device_eval_batch_size,
        progress=rank == 0,
    )
    rows = list(zip(shard, results.score, results.std, results.p_hallucination, strict=True))
    if world > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    by_index = {i: (s, sd, h) for i, s, sd, h in rows}
    score = np.array([by_index[i][0] for i in range(n)], dtype=float)
    std = np.array([by_index[i][1] for i in range(n)], dtype=float)
    p_hall = np.array([by_index[i][2] for i in range(n)], dtype=float)
    if was_training:
        model.train()
    return summarise_validation(items, score, std, p_hall)


def summarise_validation(items: dict, score, std, p_hall) -> dict[str, float]:
    position = {image_id: i for i, image_id in enumerate(items["image_id"])}
    pairs = items["pairs"]
    a = pairs["image_a"].map(position).to_numpy()
    b = pairs["image_b"].map(position).to_numpy()
    p_a = thurstone_probability(*(torch.from_numpy(x) for x in (score[a], std[a], score[b], std[b]))).numpy()
    summary = metrics.evaluate_scores(score, items["human"], items["source_id"])
    out = {
        "srcc": summary["srcc"],
        "plcc": summary["plcc"],
        "within_source_srcc": summary["within_source_srcc"],
        "pairwise_acc": metrics.pairwise_accuracy(p_a, 1 - p_a, pairs["majority"].to_numpy())["accuracy"],
        "mean_score": float(score.mean()),
    }
    known = ~np.isnan(items["hallucination"])
    if known.any():
        out["hallucination_auroc"] = metrics.hallucination_metrics(
            p_hall[known], items["hallucination"][known]
        )["auroc"]
    return {k: float(v) for k, v in out.items()}


def check_output_dir(config: TrainConfig) -> str | None:
    """The checkpoint to resume from (None for a new run), after refusing to train over an earlier run.

    A run never replaces what is already in its `output_dir` unless it resumes from a checkpoint inside it or
    `run.overwrite_output_dir` says so (the earlier run's checkpoint-N folders are then removed, so that a later
    `resume_from_checkpoint: true` cannot pick one of them). Resuming needs a complete checkpoint folder;
    `true` means the latest one in `output_dir`, `false` none.
    """
    out = Path(config.training.output_dir).expanduser()
    resume = config.training.resume_from_checkpoint
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out} is a file")
    if resume is not None and str(resume).lower() in ("false", "no", "0", ""):
        resume = None
    if resume is not None and str(resume).lower() in ("true", "yes", "1"):
        resume = get_last_checkpoint(str(out)) if out.is_dir() else None
        if resume is None:
            raise ConfigError(f"--resume_from_checkpoint true: no checkpoint-N folder in {out}")
    if resume is not None:
        state = Path(resume).expanduser() / "trainer_state.json"
        if not state.is_file():
            reason = (
                "no such folder" if not state.parent.is_dir() else "it has no trainer_state.json (cut short?)"
            )
            raise ConfigError(f"cannot resume from {resume}: {reason}")
    inside = resume is not None and out.resolve() in Path(resume).expanduser().resolve().parents
    if out.is_dir() and any(out.iterdir()) and not inside:
        if not config.run.overwrite_output_dir:
            found = sorted(p.name for p in out.iterdir())
            listed = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            raise ConfigError(
                f"output_dir {out} already holds a run ({listed}); resume it with --resume_from_checkpoint "
                "true, train over it with --overwrite_output_dir true, or choose another --output_dir"
            )
        if PartialState().is_main_process:
            for old in sorted(out.glob(f"{PREFIX_CHECKPOINT_DIR}-*")):
                logger.warning("--overwrite_output_dir: removing the earlier run's %s", old)
                shutil.rmtree(old)
    return None if resume is None else str(resume)


def training_pairs(prepared) -> Dataset:
    """The training examples (one human-compared pair each); an error before any model loads when there are none."""
    pairs = pair_examples(prepared, "train")
    if len(pairs) == 0:
        raise DataError(f"{prepared.path} has no training pairs: nothing to learn from")
    return pairs


def make_trainer(
    config: TrainConfig, model, processor, llscore_config: LLScoreConfig, prepared, train_pairs: Dataset
) -> LLScoreTrainer:
    """The `LLScoreTrainer` of a recipe: its loss terms, collator, validation split and contract."""
    unmatched = unmatched_lora_targets(model, config.lora.target_layers) if config.lora.enabled else []
    if unmatched:
        raise ConfigError(f"lora.target_layers {unmatched} match no linear layer of the language model")
    val_items = validation_items(prepared, "val", config.data.max_val_images)
    return LLScoreTrainer(
        model=model,
        args=config.training,
        train_dataset=train_pairs,
        eval_dataset=Dataset.from_dict({"image_id": val_items["image_id"]}),
        data_collator=PairCollator(
            InputBuilder(processor, llscore_config),
            config.loss,
            config.data.paraphrase_questions,
            config.training.seed,
            config.data.augment_scale,
        ),
        processing_class=processor,
        llscore_config=llscore_config,
        loss=config.loss,
        val_data=val_items,
        vision_lr_scale=config.run.vision_lr_scale,
    )


def save_run(trainer: LLScoreTrainer, report: dict) -> None:
    """The final model with its contract, trainer_state.json (the logged losses and validations) and
    validation.json (before / after), as bench/learning_curve.py reads them."""
    out = trainer.args.output_dir
    trainer.save_model(out)
    trainer.save_state()
    if trainer.is_world_process_zero():
        write_atomic(Path(out) / VALIDATION_REPORT, json.dumps(report, indent=2))


def claim_hub_push(config: TrainConfig) -> str | None:
    """Check the Hub settings before training (a missing token fails now, not after hours) and take the push
    away from `Trainer`, which would otherwise create the repo at start and push every checkpoint."""
    if not config.training.push_to_hub:
        return None
    from llscore.hub import resolve_token

    repo = config.training.hub_model_id
    if not repo or "/" not in repo:
        raise ConfigError(f"training.push_to_hub needs training.hub_model_id as USER/NAME, got {repo!r}")
    resolve_token()
    config.training.push_to_hub = False
    return repo
