"""`LLScoreTrainer`: a `transformers.Trainer` whose loss and validation both go through the checkpoint's
formulation (llscore/formulations/) and `llscore.scoring`.

A training example is one human-compared pair of restorations of the same source, so both images of a pair
are always in the same step (`llscore.collator.PairCollator`). The formulation says what a batch asks and which
loss terms it trains (docs/training.md); the trainer weighs and logs the terms, groups the parameters by part,
validates with eval.py's own functions and saves the contract with each checkpoint.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText, Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from llscore.api import LLScore
from llscore.collator import PairCollator
from llscore.config import TRAINING_SETTINGS, LLScoreTrainingArguments, training_settings
from llscore.evaluation import EvalData, llscore_metrics, score_split
from llscore.families import family_of
from llscore.files import weights_like_other_files, write_atomic
from llscore.formulations import formulation_of
from llscore.modeling import lora_wrapped_layers, write_llscore_config
from llscore.prompts import LLScoreConfig
from llscore.scoring import InputBuilder

PARTS = ("vision_encoder", "projector", "language_model", "heads")
"""The parts of a model that train at their own learning rates and are counted apart (`LLScoreTrainer.applied`);
"heads" are the parameters a formulation adds and saves in its own files."""
RELOAD_SEAMS = ("_load_from_checkpoint", "_load_best_model")
"""`Trainer` methods this trainer overrides to reload weights by name and a formulation's own files: Trainer has
no public hook for either. Pinned: tests/test_training.py checks their signatures against the installed
transformers, so that a release that renames them fails a test instead of silently skipping the reload."""


class LLScoreTrainer(Trainer):
    """Trainer with LL-Score's combined loss, per-term logging, scorer-based validation and contract saving.

    Like TRL's trainers it assembles itself: the collator (`PairCollator`) comes from the processor, the prompt
    contract and `args` (which loss terms need which question, paraphrases, augmentation, seed)."""

    args: LLScoreTrainingArguments

    def __init__(
        self,
        model,
        args: LLScoreTrainingArguments,
        *,
        processing_class,
        llscore_config: LLScoreConfig,
        val_split: EvalData | None = None,
        model_settings: dict | None = None,
        **kwargs,
    ):
        """`model_settings` (`llscore.config.model_settings`) is recorded in each checkpoint's
        training_settings.json, so that resuming with another LoRA or freezing is refused (`check_resume`)."""
        # Trainer wants an eval_dataset for its schedule; the validation itself scores val_split
        if val_split is not None:
            kwargs.setdefault(
                "eval_dataset", Dataset.from_dict({"image_id": val_split.images["image_id"].tolist()})
            )
        formulation = formulation_of(llscore_config)
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = PairCollator(
                InputBuilder(processing_class, llscore_config),
                with_hallucination=args.hallucination_bce > 0,
                paraphrase=args.paraphrase_questions,
                seed=args.seed,
                augment_scale=args.augment_scale,
                questions=formulation.questions(args.hallucination_bce > 0),
            )
        super().__init__(model, args, processing_class=processing_class, **kwargs)
        self.llscore_config = llscore_config
        self.formulation = formulation
        self.val_split = val_split
        self.model_settings = model_settings
        tokenizer = self.processing_class.tokenizer
        formulation.setup_trainer_model(self.model, tokenizer, llscore_config, args)  # before DDP / DeepSpeed
        # loss_terms(model, batch): each weighted term of docs/training.md, unweighted
        self.loss_terms = formulation.objective(tokenizer, llscore_config, args)
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = self.loss_terms(model, inputs)
        loss = sum(getattr(self.args, name) * value for name, value in terms.items())
        for name, value in terms.items():
            self._term_sums[name] += float(value.detach())
        self._term_count += 1
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Each loss term's mean since the last log, over every process (as Trainer averages `loss`): Trainer logs
        the training loss on all processes at once, so the terms are gathered there too."""
        if self._term_count and "loss" in logs:
            names = sorted(self._term_sums)
            local = [*(self._term_sums[name] for name in names), self._term_count]
            totals = self.accelerator.reduce(
                torch.tensor(local, dtype=torch.float64, device=self.args.device), reduction="sum"
            ).tolist()
            logs.update(
                {
                    f"loss_{name}": round(total / totals[-1], 5)
                    for name, total in zip(names, totals[:-1], strict=True)
                }
            )
            self._term_sums.clear()
            self._term_count = 0
        super().log(logs, *args, **kwargs)

    def create_optimizer(self, model=None):
        """The projector at its own learning rate (`projector_learning_rate`) and the vision tower at a lower one
        (`vision_lr_scale` < 1); one group per part and weight decay."""
        args = self.args
        if (
            args.vision_lr_scale == 1.0 and args.projector_learning_rate is None
        ) or self.optimizer is not None:
            return super().create_optimizer(model)
        model = model or self.model
        decay = set(self.get_decay_parameter_names(model))
        groups = defaultdict(list)
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups[(self.part_of(name), name in decay)].append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(args, model)
        lr = optimizer_kwargs.pop("lr", args.learning_rate)
        part_lr = {
            "projector": lr * args.vision_lr_scale  # unset: the tower's rate
            if args.projector_learning_rate is None
            else args.projector_learning_rate,
            "vision_encoder": lr * args.vision_lr_scale,
            "language_model": lr,
            "heads": lr,
        }
        self.optimizer = optimizer_cls(
            [
                {"params": params, "lr": part_lr[part], "weight_decay": args.weight_decay if decay else 0.0}
                for (part, decay), params in groups.items()
            ],
            lr=lr,
            **optimizer_kwargs,
        )
        return self.optimizer

    def part_of(self, name: str) -> str:
        """The part of the model a parameter belongs to (`PARTS`), for its learning rate and the run's record."""
        family = family_of(self.model.config)
        if family.is_projector_parameter(name):
            return "projector"
        if family.is_vision_parameter(name):
            return "vision_encoder"
        return "heads" if self.formulation.is_own_parameter(name) else "language_model"

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
        result = self.model.load_state_dict(saved.state_dict(), strict=False)
        mismatched = [key for key in result.missing_keys if not self.formulation.is_own_parameter(key)]
        mismatched += result.unexpected_keys
        if mismatched:  # only a formulation's own parameters live in its own files
            raise RuntimeError(f"{checkpoint}: saved weights do not match the model's: {mismatched[:3]}")

    def _load_own_files(self, checkpoint: str) -> None:
        """The formulation's own files (which neither Trainer nor peft reads), loaded in place, so that the
        optimizer keeps holding the same parameters."""
        if self.deepspeed is None:  # a DeepSpeed engine restores them with its module states
            self.formulation.reload_in_place(self.model, Path(checkpoint))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if model is not None or not self._uses_plain_weights():
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        else:
            self._load_plain_weights(resume_from_checkpoint)
        self._load_own_files(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if not self._uses_plain_weights():
            super()._load_best_model()
        else:
            self._load_plain_weights(self.state.best_model_checkpoint)
        self._load_own_files(self.state.best_model_checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        own_state = self.formulation.own_state(self.model)  # every process: ZeRO-3 gathers it
        if self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            write_llscore_config(self.llscore_config, folder)
            if own_state is not None:
                self.formulation.write_own_state(own_state, folder)
            settings = {**training_settings(self.args), "applied": self.applied()}
            if self.model_settings is not None:
                settings["model"] = self.model_settings
            write_atomic(folder / TRAINING_SETTINGS, json.dumps(settings, indent=2) + "\n")
            weights_like_other_files(folder)

    def applied(self) -> dict:
        """What this run trains with in fact, as loaded and wrapped (not what the recipe asked): the DeepSpeed
        ZeRO stage, the layers LoRA wraps, the quantised layers, trainable and total parameters (a ZeRO-3
        partition counts whole), and the trainable ones of each part (`PARTS`; the language model's include
        LoRA's and the embeddings')."""

        def count(param) -> int:
            return getattr(param, "ds_numel", param.numel())

        modules = list(self.model.named_modules())
        trainable_by_part = dict.fromkeys(PARTS, 0)
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                trainable_by_part[self.part_of(name)] += count(param)
        plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        return {
            "zero_stage": plugin.zero_stage if plugin else None,
            "lora_layers": lora_wrapped_layers(self.model),
            "quantized_layers": sum(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for _, m in modules),
            "trainable_parameters": sum(count(p) for p in self.model.parameters() if p.requires_grad),
            "parameters": sum(count(p) for p in self.model.parameters()),
            "trainable_by_part": trainable_by_part,
        }

    def _ready_for_scoring(self):
        """Before the DeepSpeed engine exists (the validation before training), the model is where loading left it:
        on the CPU (Trainer leaves placement to DeepSpeed), and under ZeRO-3 with every weight partitioned, which
        nothing gathers for a forward pass. It is moved to the device, and ZeRO-3 weights are gathered whole for
        that validation only. Once the engine exists, its hooks gather each layer as its forward runs."""
        if not self.is_deepspeed_enabled or self.deepspeed is not None:
            return contextlib.nullcontext()
        if is_deepspeed_zero3_enabled():
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None)
        self.model.to(self.args.device)
        return contextlib.nullcontext()

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """SRCC / PLCC / pairwise accuracy / hallucination AUROC on `val_split`, by eval.py's own functions."""
        if self.val_split is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        scorer = LLScore(self.model, self.processing_class, self.llscore_config)
        with self._ready_for_scoring():
            scored = score_split(
                scorer,
                self.val_split.images,
                self.args.per_device_eval_batch_size,
                workers=self.args.dataloader_num_workers,  # as the training batches are prepared
            )
        self.model.train(was_training)
        results = {f"{metric_key_prefix}_{k}": v for k, v in llscore_metrics(self.val_split, scored).items()}
        self.log(dict(results))  # Trainer.log adds the epoch to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, results)
        return results
