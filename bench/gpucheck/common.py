"""What every part of the GPU check shares: the repo's paths, the models and recipes it checks, what one run
measures (`Setting`), bench/'s other scripts as modules, random test images and a synchronised timer
(bench/gpu_check.py; docs/performance.md)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llscore.config import load_config
from llscore.families import family_of_real_size
from llscore.prompts import ResolutionRule

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
GPU_CHECK = BENCH / "gpu_check.py"
"""The command line, which a training part also runs as its own process (`--training-child`)."""
TRAINED = "qwen2_5_vl_7b"
"""The model of the LoRA and QLoRA recipes, the one trained here."""
FALLBACK = "qwen2_5_vl_3b"
"""Trained instead on CPU when the 7B's training does not fit in memory (the same family, code and recipes)."""
CHECKED_MODELS = ("qwen2_5_vl_7b", "qwen3_vl_8b")
GIB = 2**30
TRAINING_RECIPES = {"lora": "llscore_qwen", "qlora": "llscore_qlora"}
ESTIMATE_ROW = {"llscore_qwen": 0, "llscore_qlora": 1}
"""The row of bench/estimate_memory.py's table that estimates each measured recipe."""
FULL_FINE_TUNING = (
    "not run: full fine-tuning of the 8.3B-parameter model keeps ~16 bytes per parameter for bf16 weights and "
    "gradients, fp32 master weights and Adam (~133 GB), which with the activations and the CUDA context exceeds "
    "one 141 GB GPU; the recipe shards it with ZeRO-3 over several GPUs, and CPU offload on one GPU would need "
    "that much host memory (the check machine has 128 GiB)"
)


@dataclass
class Setting:
    """What one run measures: the real sizes on a GPU, or their width-reduced stand-ins on CPU."""

    device: str
    dtype: str
    image_sides: dict[
        str, int | None
    ]  # label -> side of the square test images; None: the recipe's max_pixels
    batches: tuple[int, ...]
    repeats: int
    train_steps: int
    budgets: dict[str, float]
    warm_up: bool = True  # a first call that is not timed (kernel selection on a GPU)
    train_pairs: int | None = None  # pairs per step (None: the recipe's batch size)
    train_side: int | None = None  # side of the training images (None: the recipe's max_pixels)
    real_size_cpu: bool = False

    @classmethod
    def for_run(cls, dry_run: bool, device: str = "cuda") -> Setting:
        if dry_run:
            return cls("cpu", "float32", {"56x56": 56, "max_pixels": None}, (1, 2), 1, 2, {})
        if device == "cpu":  # tens of seconds per forward: one step of one pair, each forward timed once
            sides = {"448x448": 448, "max_pixels": None}
            return cls("cpu", "bfloat16", sides, (1, 2), 1, 1, {}, False, 1, 448, True)
        budgets = {"build": 45, "training": 45, "scoring": 20}
        return cls("cuda", "bfloat16", {"448x448": 448, "max_pixels": None}, (1, 8, 32), 2, 6, budgets)


def resolution_of(name: str, dry_run: bool) -> ResolutionRule:
    """The resolution rule of the model's recipe (a dry run keeps the tiny models' 56-112 px)."""
    if dry_run:
        return ResolutionRule(3136, 12544)
    return load_config(
        REPO / f"configs/{family_of_real_size(name).recipe}.yaml", ["--bf16", "false"]
    ).resolution


@cache
def bench_script(name: str):
    """A script of bench/ as a module (imported once)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_images(size: tuple[int, int], count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)
    ]


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
