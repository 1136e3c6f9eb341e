"""The training parts of the GPU check: step time, pairs/s and peak memory of a recipe (its model, LoRA, loss and
batch settings) beside bench/estimate_memory.py's estimate; on CPU at real size each part runs in its own process,
ended at the memory limit or the deadline (bench/gpu_check.py; docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from llscore.config import load_config
from llscore.errors import reason
from llscore.files import write_atomic
from llscore.modeling import load_for_training
from llscore.prompts import LLScoreConfig

from .common import ESTIMATE_ROW, GIB, GPU_CHECK, REPO, TRAINED, Setting, bench_script, random_images
from .guard import PartSkipped, PeakMemory, check_memory, current_rss, part_memory
from .models import architecture

if TYPE_CHECKING:
    from .budget import CpuBudget


def _pairs(size: tuple[int, int], count: int, folder: Path):
    """A training set of `count` synthetic pairs in `PreparedData.pair_examples`' format."""
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(random_images(size, 3 * count, 2)):
        paths.append(folder / f"{i}.png")
        image.save(paths[-1])
    soft = [0.1, 0.2, 0.4, 0.2, 0.1]
    return Dataset.from_dict(
        {
            "example_id": list(range(count)),
            "degraded": [str(paths[3 * i]) for i in range(count)],
            "restored_a": [str(paths[3 * i + 1]) for i in range(count)],
            "restored_b": [str(paths[3 * i + 2]) for i in range(count)],
            "p_a_better": [0.7] * count,
            "soft_target_a": [soft] * count,
            "soft_target_b": [soft] * count,
            "hallucination_a": [0.0] * count,
            "hallucination_b": [1.0] * count,
        }
    )


def quantized_weights_on_cpu(name: str) -> float:
    """Bytes that `name`'s weights take when it trains in 4 bits on CPU (measured, docs/performance.md): as much
    as a bf16 copy of every weight (the checkpoint read for quantisation; bitsandbytes' CPU backend), and the
    vision tower, embeddings and head cast to fp32. On a GPU the layers are quantised as they arrive and the 4-bit
    weights are what stays."""
    counts = architecture(name)
    return 2 * counts["total"] + 4 * (counts["vision"] + counts["embeddings"])


def training_estimate(name: str, recipe: str, pairs: int, side: int, lora_rank: int) -> dict:
    """bench/estimate_memory.py's rows for `name`'s architecture at this step's pairs and image size."""
    estimate = bench_script("estimate_memory")
    counts = estimate.parameter_counts(lora_rank, REPO / "configs/models" / f"{name}.json")
    return estimate.estimate(counts, 1, pairs, side * side // counts["token_side"] ** 2)[ESTIMATE_ROW[recipe]]


def training(
    ckpt: Path,
    recipe: str,
    setting: Setting,
    work: Path,
    dry_run: bool,
    max_rss: float | None = None,
    held_elsewhere: float = 0.0,
) -> dict:
    """Step time, pairs/s and peak memory of `recipe` on one device (its model, LoRA, loss and batch settings);
    skipped when its estimated memory would pass `max_rss` bytes."""
    from transformers import TrainerCallback

    from llscore.trainer import LLScoreTrainer

    overrides = ["--model_name_or_path", str(ckpt), "--output_dir", str(work / recipe)]
    overrides += ["--max_steps", str(setting.train_steps), "--save_strategy", "no", "--eval_strategy", "no"]
    overrides += [
        "--report_to",
        "none",
        "--logging_steps",
        "1",
        "--dataloader_num_workers",
        "2",
        "--warmup_steps",
        "0",
    ]
    overrides += [
        "--gradient_accumulation_steps",
        "1",
        "--deepspeed",
        "null",
        "--load_best_model_at_end",
        "false",
    ]
    if dry_run:
        overrides += ["--bf16", "false", "--dtype", "float32", "--use_cpu", "true"]
        overrides += ["--min_pixels", "3136", "--max_pixels", "12544"]
    elif setting.device == "cpu":
        overrides += ["--use_cpu", "true", "--dataloader_num_workers", "0"]
    if setting.train_pairs:
        overrides += ["--per_device_train_batch_size", str(setting.train_pairs)]
    config = load_config(REPO / f"configs/{recipe}.yaml", overrides)
    llscore_config = LLScoreConfig(resolution=config.resolution)
    batch = config.training.per_device_train_batch_size
    side = setting.train_side or int(config.resolution.max_pixels**0.5)
    estimated_model = TRAINED if dry_run else ckpt.name
    estimate = training_estimate(estimated_model, recipe, batch, side, config.lora.lora_r)
    modelled = estimate["weights"] + estimate["train_state"] + estimate["act"]
    on_this_device = modelled
    if config.model.quantization and setting.real_size_cpu:
        on_this_device += quantized_weights_on_cpu(estimated_model) - estimate["weights"]
    if not dry_run:  # a dry run's estimate is the real 7B's, not the width-reduced model's it trains
        check_memory(f"training {recipe}", on_this_device, max_rss, held_elsewhere)
    pairs = _pairs((side, side), batch * setting.train_steps, work / f"{recipe}_pairs")
    steps: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - self.start)

    with part_memory(setting, None) as memory:
        model, processor = load_for_training(
            config.model,
            config.lora,
            llscore_config,
            activation_checkpointing=config.training.activation_checkpointing,
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer = LLScoreTrainer(
            model=model,
            args=config.training,
            train_dataset=pairs,
            processing_class=processor,
            llscore_config=llscore_config,
            callbacks=[StepTimes()],
        )
        trainer.train()
    steady = steps[1:] or steps  # the first step includes kernel selection and allocator growth
    out = {
        "pairs_per_step": batch,
        "image_side": side,
        "step_s": float(np.median(steady)),
        "pairs_per_s": batch / float(np.median(steady)),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if torch.cuda.is_available():
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GIB
    elif memory:
        out.update(memory.row())
    # bench/estimate_memory.py for this architecture (the real 7B's in a dry run) at this batch and resolution
    out["estimated_model"] = estimated_model
    out["estimate_gib"] = estimate["total_gib"]
    out["estimate_modelled_gib"] = modelled / GIB  # weights + training state + activations, no CUDA context
    if setting.real_size_cpu:
        out["estimate_error"] = out["estimate_modelled_gib"] / out["part_rss_gib"] - 1
        out["estimate_on_cpu_gib"] = on_this_device / GIB  # 4 bits on CPU: see quantized_weights_on_cpu
        out["estimate_on_cpu_error"] = out["estimate_on_cpu_gib"] / out["part_rss_gib"] - 1
    del trainer, model
    return out


def training_in_child(
    ckpt: Path, recipe: str, setting: Setting, work: Path, dry_run: bool, budget: CpuBudget
) -> dict:
    """`training` in a fresh Python process, watched from here: at the memory limit or the deadline the process
    is ended at once, and whatever happens its memory goes back to the system before the next part (an
    exception raised into a running step left a real-size model allocated: docs/performance.md)."""
    row_file = work / f"{recipe}_row.json"
    row_file.unlink(missing_ok=True)
    held = current_rss()  # this process and the child together stay within --max-rss-gb
    spec = dict(ckpt=str(ckpt), recipe=recipe, device=setting.device, work=str(work), dry_run=dry_run)
    spec.update(max_rss=budget.max_rss, held_elsewhere=held, out=str(row_file))
    child = subprocess.Popen([sys.executable, str(GPU_CHECK), "--training-child", json.dumps(spec)])
    try:
        with PeakMemory(budget.max_rss, budget.deadline, child.pid, held):
            child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the training process ended with exit code {child.returncode}")
    row = json.loads(row_file.read_text())
    if "skipped" in row:
        raise PartSkipped(row["skipped"])
    if "failed" in row:
        raise RuntimeError(row["failed"])
    return row


def training_child(spec: dict) -> None:
    """The child's side of `training_in_child`: one training part, its row (or why it did not run) in a file."""
    setting = Setting.for_run(spec["dry_run"], spec["device"])
    try:
        row = training(
            Path(spec["ckpt"]),
            spec["recipe"],
            setting,
            Path(spec["work"]),
            spec["dry_run"],
            spec["max_rss"],
            spec["held_elsewhere"],
        )
    except PartSkipped as skip:
        row = {"skipped": str(skip)}
    except Exception as err:
        row = {"failed": reason(err)[:400]}
    write_atomic(Path(spec["out"]), json.dumps(row))
