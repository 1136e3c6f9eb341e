"""The real-size recipes on one GPU in minutes: scoring throughput and training step time / memory, measured with
random weights at the real shapes (memory and speed do not depend on the weights' values).

    python bench/gpu_check.py [--out bench/results] [--budget-s 300] [--models qwen2_5_vl_7b qwen3_vl_8b]
    python bench/gpu_check.py --dry-run [--out DIR]    # the same code on CPU, width-reduced configs (run in CI)
    python bench/gpu_check.py --device cpu --real-size [--budget-s 1800] [--max-rss-gb 22]   # real sizes, CPU

A measured run's gpu_check.json in --out is never replaced by a dry run, and by another run only with --overwrite.

Each model is built from configs/models/<name>.json (the public architecture values) with LL-Score's tiny
tokenizer (its ids written into the config; the embedding keeps the real vocabulary size) and saved once, so that
every part loads it through the repo's own code: `LLScore.from_pretrained` for scoring, `load_for_training` and
`LLScoreTrainer` for training, with the recipe's settings from configs/llscore_*.yaml.

Parts, each guarded (an OOM or a missing kernel is recorded and the next part runs), skipped when the time budget
left is below its minimum, and written to gpu_check.json as soon as it ends (a run cut short keeps what it
measured); training first, then scoring, one part per resolution and batch size:
- training: step time, pairs/s and peak memory (allocated and reserved) of the LoRA and QLoRA recipes at their
  batch sizes on Qwen2.5-VL-7B, beside bench/estimate_memory.py's estimate; full fine-tuning is reported as not
  run, with the reason;
- scoring: images/s of 448x448 images and of images at the model's recipe's max_pixels (its resolution rule),
  batch 1 / 8 / 32, for the one-pass scorer (both
  questions, and quality alone), a generate-and-parse scorer (quality, bench/bench_scoring.py) and a bare forward
  on pre-built tensors; prefill FLOPs per image (2 x parameters x tokens, for the LLM and the vision tower) and the
  fraction of the GPU's bf16 peak that the one-pass scorer reaches.
Writes gpu_check.json and gpu_check.md into --out. Attention runs as the recipes configure it (sdpa; Qwen2.5-VL's
windowed vision attention is much faster with flash-attn installed).

`--device cpu --real-size` runs the same parts at the real dimensions in bf16 on the CPU (docs/performance.md):
one training step of one pair of 448 px images, scoring at batch 1 and 2, the peak resident memory of each part
beside bench/estimate_memory.py's estimate of it. Before each part its peak memory and its time (from its FLOPs
at the measured bf16 matmul rate) are estimated, and it is skipped with that reason rather than swap or run past
the budget; when the 7B cannot train within `--max-rss-gb`, Qwen2.5-VL-3B's architecture trains instead. Each
training part runs in its own process, ended at the limit, so that its memory is returned whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llscore.api import LLScore  # noqa: E402
from llscore.config import load_config  # noqa: E402
from llscore.errors import reason  # noqa: E402
from llscore.families import FAMILIES, family_of, family_of_real_size  # noqa: E402
from llscore.files import write_atomic  # noqa: E402
from llscore.modeling import load_for_training, load_processor, write_llscore_config  # noqa: E402
from llscore.prompts import LLScoreConfig, ResolutionRule  # noqa: E402
from llscore.scoring import answer_logits  # noqa: E402

PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10": 125.0,
}
"""Dense bf16 tensor-core peaks (vendor data sheets); the first name found in the device name wins."""
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


class PartSkipped(Exception):
    """Raised by a part that decides, before it allocates anything, not to run (the message says why)."""


def run_parts(
    parts: list[tuple[str, Callable[[], dict], float | Callable[[], float]]],
    deadline: float,
    results: dict | None = None,
    on_result: Callable[[], None] = lambda: None,
) -> dict[str, dict]:
    """Run each part that its minimum time (seconds, or a function estimating them when the part is reached) fits
    in before `deadline`; a failure is recorded and the rest runs. `on_result` is called after every part (to
    write what has been measured so far)."""
    results = {} if results is None else results
    for name, part, minimum in parts:
        start = time.monotonic()
        try:
            left = deadline - start
            needed = minimum() if callable(minimum) else minimum
            if left < needed:
                raise PartSkipped(f"needs ~{needed:.0f} s, {left:.0f} s left")
            results[name] = {"status": "ok", **part()}
        except PartSkipped as skip:
            results[name] = {"status": "skipped", "reason": str(skip)}
        except PartStopped as stop:
            results[name] = {"status": "stopped", "reason": str(stop)}
        except Exception as err:  # an OOM or a missing kernel in one part must not lose the others
            results[name] = {"status": "failed", "error": reason(err)[:400]}
        results[name]["seconds"] = round(time.monotonic() - start, 1)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        on_result()
    return results


@cache
def _sibling(name: str):
    """A script of bench/ as a module (imported once)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config(name: str, tokenizer, dry_run: bool):
    """The architecture at its real size (or the family's tiny width for a dry run) with the tokenizer's ids."""
    from transformers import AutoConfig

    from llscore_sim.tiny import tiny_config

    values = json.loads((REPO / "configs/models" / f"{name}.json").read_text())
    values.pop("_comment")
    if dry_run:
        config = tiny_config(family_of_real_size(name).model_type, tokenizer)
        config.text_config.vocab_size = values["text_config"]["vocab_size"]
        return config
    config = AutoConfig.for_model(**values)
    ids = tokenizer.convert_tokens_to_ids
    config.image_token_id, config.video_token_id = ids("<|image_pad|>"), ids("<|video_pad|>")
    config.vision_start_token_id, config.vision_end_token_id = ids("<|vision_start|>"), ids("<|vision_end|>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.eos_token_id = ids("<|im_end|>")
    return config


def fill_random(model, seed: int = 0, std: float = 0.02) -> None:
    """Random weights without one normal draw per parameter (8 billion at 7B): one block of draws tiled through
    every matrix, norm scales 1, biases 0. Memory and speed do not depend on the values."""
    block = torch.randn(1_000_003, generator=torch.Generator().manual_seed(seed)) * std
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.dim() == 1:
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            flat = tensor.view(-1)
            for start in range(0, flat.numel(), block.numel()):
                flat[start : start + block.numel()].copy_(block[: flat.numel() - start])


def build(name: str, folder: Path, setting: Setting, dry_run: bool) -> dict:
    """A random model of `name` saved with a processor and the default prompt contract: an LL-Score checkpoint.
    On CPU the model is laid out on the meta device and filled (`fill_random`); on a GPU it is drawn there."""
    from transformers import AutoModelForImageTextToText

    from llscore_sim.tiny import build_tiny_checkpoint

    tiny = build_tiny_checkpoint(family_of_real_size(name).model_type, folder / "tokenizer")
    processor = load_processor(tiny, LLScoreConfig())
    config = model_config(name, processor.tokenizer, dry_run)
    torch.manual_seed(0)
    dtype = getattr(torch, setting.dtype)
    if setting.device == "cpu":
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        model.to_empty(device="cpu")  # one new tensor per parameter: a tied output head is tied again
        model.tie_weights()
        fill_random(model)
    else:
        with torch.device(setting.device):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    out = folder / name
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_llscore_config(LLScoreConfig(), out)
    parameters = {
        "total": sum(p.numel() for p in model.parameters()),  # a tied lm_head is counted once
        "vision": sum(
            p.numel() for n, p in model.named_parameters() if family_of(config).is_vision_parameter(n)
        ),
        "embedding": model.get_input_embeddings().weight.numel(),
        "lm_head": model.get_output_embeddings().weight.numel(),
        "lm_head_tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
    }
    del model
    return {"parameters": parameters}


def _images(size: tuple[int, int], count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)
    ]


def _timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def prefill_flops(inputs, parameters: dict) -> float:
    """Per item: 2 x parameters x tokens for the LLM's layers (text + visual tokens) and the vision tower (its
    patches), plus the output head at the one position read; embedding lookups and attention scores left out."""
    items = inputs["input_ids"].shape[0]
    tokens = int(inputs["attention_mask"].sum())
    patches = int(inputs["pixel_values"].shape[0])
    head = 0 if parameters["lm_head_tied"] else parameters["lm_head"]
    layers = parameters["total"] - parameters["vision"] - parameters["embedding"] - head
    return 2.0 * (layers * tokens + parameters["vision"] * patches + parameters["lm_head"] * items) / items


def measure_batch(scorer: LLScore, side: int, batch: int, setting: Setting, parameters: dict) -> dict:
    """Images/s of the one-pass scorer, a bare forward and generate-and-parse, at one image size and batch size.
    On CPU at real size (tens of seconds a forward) the quality question alone is timed, once per way."""
    naive = _sibling("bench_scoring").naive_generate_scorer
    count = batch * setting.repeats
    restored, degraded = _images((side, side), count, 0), _images((side, side), count, 1)
    if setting.warm_up:
        scorer.score(restored[:batch], degraded[:batch], batch_size=batch)
        naive(scorer, restored[:batch], degraded[:batch], batch)
    inputs = {
        task: tensors.to(scorer.device)
        for task, tensors in scorer._inputs(restored[:batch], degraded[:batch], True).items()
    }
    questions = ["quality"] if setting.real_size_cpu else list(inputs)

    def bare() -> None:
        with torch.no_grad():
            for _ in range(setting.repeats):
                for task in questions:
                    answer_logits(scorer.model, inputs[task])

    workers = 2 if setting.device == "cuda" else 0  # on a CPU, workers take the model's cores
    ways = {}
    if not setting.real_size_cpu:
        ways["one_pass"] = lambda: scorer.score(restored, degraded, batch_size=batch, workers=workers)
    ways["one_pass_quality"] = lambda: scorer.score(
        restored, degraded, batch_size=batch, hallucination=False, workers=workers
    )
    ways["bare_forward"] = bare
    if not (setting.real_size_cpu and batch > 1):  # ~45 s per image on CPU: timed at batch 1 only
        ways["generate_quality"] = lambda: naive(scorer, restored, degraded, batch)
    seconds = {name: _timed(way, setting.device) for name, way in ways.items()}
    row = {f"{name}_images_per_s": count / s for name, s in seconds.items()}
    row["bare_forward_questions"] = len(questions)
    row["visual_tokens_per_image"] = int((inputs["quality"]["input_ids"] == _image_token(scorer)).sum()) // (
        2 * batch
    )
    flops = prefill_flops(inputs["quality"], parameters)
    row["prefill_gflops_per_image"] = len(questions) * flops / 1e9
    row["bare_forward_gflop_per_s"] = row["prefill_gflops_per_image"] * row["bare_forward_images_per_s"]
    return row


def page_in(model) -> None:
    """Read one element of every 4 KiB page of every weight. Weights read from a memory-mapped checkpoint are
    otherwise paged in by the first forward, which then times the disk rather than the model: on CPU, where no
    part is warmed up, the one-pass row timed first took 75 s per image beside a 28 s bare forward."""
    with torch.no_grad():
        for param in model.parameters():
            param.detach().reshape(-1)[:: 4096 // param.element_size()].sum()


def _image_token(scorer: LLScore) -> int:
    return scorer.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def scoring_row(
    loaded: dict, name: str, side: int | None, batch: int, setting: Setting, dry_run: bool, peak: float | None
) -> dict:
    """One (image size, batch) row with the ratios the targets are about; the model is loaded once per model."""
    rule = resolution_of(name, dry_run)
    if "scorer" not in loaded:
        loaded["scorer"] = LLScore.from_pretrained(loaded["path"], dtype=setting.dtype, device=setting.device)
        page_in(loaded["scorer"].model)
    model = loaded["scorer"]
    scorer = LLScore(model.model, model.processor, LLScoreConfig(resolution=rule))
    side = side or int(rule.max_pixels**0.5)
    row = {
        "image_side": side,
        "batch": batch,
        **measure_batch(scorer, side, batch, setting, loaded["parameters"]),
    }
    one_pass = row.get("one_pass_images_per_s", row["one_pass_quality_images_per_s"])
    row["scorer_over_bare_forward"] = one_pass / row["bare_forward_images_per_s"]
    if "generate_quality_images_per_s" in row:
        row["one_pass_over_generate"] = (
            row["one_pass_quality_images_per_s"] / row["generate_quality_images_per_s"]
        )
    if peak:
        achieved = row["prefill_gflops_per_image"] * 1e9 * row["one_pass_images_per_s"]
        row["fraction_of_bf16_peak"] = achieved / (peak * 1e12)
    return row


def _pairs(size: tuple[int, int], count: int, folder: Path):
    """A training set of `count` synthetic pairs in `PreparedData.pair_examples`' format."""
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(_images(size, 3 * count, 2)):
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


class PartStopped(BaseException):
    """A part stopped while it ran, because it reached the memory limit or the time budget (the message says).
    A BaseException, as KeyboardInterrupt is: raised asynchronously anywhere in the part, it must not be taken
    for an ordinary error by a library's `except Exception`."""


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system, so that resident memory means what is live."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """The resident memory of this process before and at its peak while a block runs (sampled every 10 ms): what
    a part uses on CPU, where there are no CUDA memory counters. With a limit (bytes) or a deadline (monotonic
    seconds), a part that reaches either is interrupted with `PartStopped` (raised in the thread that entered the
    block, at its next Python instruction: a signal would go to whatever SIGINT handler a library installed),
    rather than swap, be killed by the kernel or run past the budget. Given a child process (`pid`), it watches
    that process instead and ends it at once, even inside a long C call."""

    def __init__(
        self,
        limit: float | None = None,
        deadline: float | None = None,
        pid: int | None = None,
        held_elsewhere: float = 0.0,
    ):
        self.limit, self.deadline, self.pid, self.stopped = limit, deadline, pid, ""
        self.held_elsewhere = held_elsewhere  # resident memory of the watching process, counted in the limit
        self._owner = threading.get_ident()

    def __enter__(self) -> PeakMemory:
        import psutil

        release_freed_memory()
        self._process = psutil.Process(self.pid)
        self.baseline = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.NoSuchProcess:  # the child has ended
                return
            if self.stopped:
                continue
            if self.limit is not None and self.peak + self.held_elsewhere > self.limit:
                total = (self.peak + self.held_elsewhere) / 1e9
                self.stopped = f"{total:.1f} GB resident passed the {self.limit / 1e9:g} GB limit"
            elif self.deadline is not None and time.monotonic() > self.deadline:
                self.stopped = "the time budget ran out"
            if self.stopped and self.pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self._process.kill()
            elif self.stopped:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._owner), ctypes.py_object(PartStopped)
                )

    def __exit__(self, kind, value, traceback) -> None:
        import psutil

        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.peak = max(self.peak, self._process.memory_info().rss)
        if self.stopped and (kind is not None or self.pid is not None):
            raise PartStopped(
                f"stopped: {self.stopped}; {self.peak / 1e9:.1f} GB at the peak, before the stop took effect"
            ) from None

    def row(self) -> dict:
        return {
            "rss_before_gib": self.baseline / GIB,
            "peak_rss_gib": self.peak / GIB,
            "part_rss_gib": (self.peak - self.baseline) / GIB,
        }


def current_rss() -> int:
    import psutil

    release_freed_memory()
    return psutil.Process().memory_info().rss


MEMORY_MARGIN = 1.1
"""A part starts only if 1.1x its estimated memory fits: the estimates are within ~5 % at real size
(docs/performance.md), and the limit is a ceiling, not a target."""


def check_memory(part: str, needed_bytes: float, limit: float | None, held_elsewhere: float = 0.0) -> None:
    """Skip a part whose estimated peak (this process now, what other processes of the check hold, and what the
    part adds, with the margin) exceeds `limit` bytes."""
    if limit is None:
        return
    peak = current_rss() + held_elsewhere + MEMORY_MARGIN * needed_bytes
    if peak > limit:
        raise PartSkipped(f"{part}: estimated peak {peak / 1e9:.1f} GB > --max-rss-gb {limit / 1e9:g}")


def quantized_weights_on_cpu(name: str) -> float:
    """Bytes that `name`'s weights take when it trains in 4 bits on CPU (measured, docs/performance.md): as much
    as a bf16 copy of every weight (the checkpoint read for quantisation; bitsandbytes' CPU backend), and the
    vision tower, embeddings and head cast to fp32. On a GPU the layers are quantised as they arrive and the 4-bit
    weights are what stays."""
    counts = architecture(name)
    return 2 * counts["total"] + 4 * (counts["vision"] + counts["embeddings"])


def training_estimate(name: str, recipe: str, pairs: int, side: int, lora_rank: int) -> dict:
    """bench/estimate_memory.py's rows for `name`'s architecture at this step's pairs and image size."""
    estimate = _sibling("estimate_memory")
    counts = estimate.parameter_counts(lora_rank, REPO / "configs/models" / f"{name}.json")
    return estimate.estimate(counts, 1, pairs, side * side // 784)[ESTIMATE_ROW[recipe]]


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
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--training-child", json.dumps(spec)]
    )
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


def part_memory(setting: Setting, budget: CpuBudget | None):
    """Peak resident memory on CPU (with the real-size budget's limit and deadline); nothing on a GPU, whose
    parts read CUDA's own counters."""
    if setting.device != "cpu":
        return contextlib.nullcontext()
    return PeakMemory(budget.max_rss, budget.deadline) if budget else PeakMemory()


@cache
def architecture(name: str) -> dict[str, int]:
    """Exact parameter counts of the real architecture `name` (built on the meta device; LoRA at the recipes'
    rank)."""
    estimate = _sibling("estimate_memory")
    return estimate.parameter_counts(64, REPO / "configs/models" / f"{name}.json")


def forward_flops(name: str, side: int, items: int) -> float:
    """Prefill FLOPs of `items` questions, each over a degraded input and a restoration of `side` px."""
    counts = architecture(name)
    patches = 2 * (side // counts["patch_size"]) ** 2
    tokens = patches // 4 + 110
    return items * 2.0 * ((counts["llm"] - counts["embeddings"]) * tokens + counts["vision"] * patches)


def matmul_rate(device: str) -> float:
    """FLOP/s of a bf16 matrix product of the size an LLM layer runs (1024 x 4096 @ 4096 x 4096)."""
    a = torch.randn(1024, 4096, dtype=torch.bfloat16, device=device)
    b = torch.randn(4096, 4096, dtype=torch.bfloat16, device=device)
    a @ b
    seconds = min(_timed(lambda: a @ b, device) for _ in range(3))
    return 2 * 1024 * 4096 * 4096 / seconds


class CpuBudget:
    """Time and memory estimates that decide, before each real-size CPU part, whether it can run."""

    LOAD_BYTES_PER_S = 1e9  # reading a bf16 checkpoint from the page cache or disk
    SAVE_BYTES_PER_S = 3e8
    EFFICIENCY = 0.5  # until a forward is measured: about half the matmul rate (attention, norms, casts)
    SAFETY = 1.3  # estimates are rough: a part starts only if 1.3x its estimate fits

    def __init__(self, max_rss_gb: float, deadline: float, device: str = "cpu"):
        self.max_rss = max_rss_gb * 1e9
        self.deadline = deadline  # no part runs past it (monotonic seconds)
        self.matmul_flops_per_s = matmul_rate(device)
        self.forward_flops_per_s = self.EFFICIENCY * self.matmul_flops_per_s
        self.generate_forwards = (
            1.6  # generate-and-parse ~ 1.6 bare forwards (Qwen2.5-VL-7B, 448 px, batch 1)
        )

    def observe(self, row: dict) -> None:
        """Take the forward rate and the cost of generation from a measured scoring row."""
        self.forward_flops_per_s = row["bare_forward_gflop_per_s"] * 1e9
        if "generate_quality_images_per_s" in row:
            self.generate_forwards = row["bare_forward_images_per_s"] / row["generate_quality_images_per_s"]

    def seconds(self, flops: float, load_bytes: float = 0.0) -> float:
        return self.SAFETY * (flops / self.forward_flops_per_s + load_bytes / self.LOAD_BYTES_PER_S)

    def build_s(self, name: str) -> float:
        return self.SAFETY * 2 * architecture(name)["total"] / self.SAVE_BYTES_PER_S

    def training_s(self, name: str, side: int) -> float:
        # one pair: 2 restorations x 2 questions; forward, recomputation and backward ~ 4 forwards
        return self.seconds(4 * forward_flops(name, side, 4), 2 * architecture(name)["total"])

    def scoring_s(self, name: str, side: int, batch: int, loaded: bool) -> float:
        # one-pass and bare forward: two quality forwards per image; generate-and-parse at batch 1 only
        forwards = 2 + (self.generate_forwards if batch == 1 else 0)
        load = 0 if loaded else 2 * architecture(name)["total"]
        return self.seconds(forwards * forward_flops(name, side, batch), load)


def model_parts(
    name: str,
    work: Path,
    setting: Setting,
    dry_run: bool,
    peak: float | None,
    budget: CpuBudget | None = None,
    train: bool | None = None,
    score: bool = True,
    recipes: tuple[str, ...] = tuple(TRAINING_RECIPES),
) -> list:
    """Build the model, train it (the recipes' own model only, unless `train` says), then score with it, one part
    per row. With a `budget` (real sizes on CPU) each part's time is estimated when it is reached and its memory
    checked before it allocates."""
    loaded: dict = {"path": work / name}

    def build_part() -> dict:
        if budget:
            check_memory(f"build {name}", 2 * architecture(name)["total"], budget.max_rss)
        with part_memory(setting, budget) as memory:
            built = build(name, work, setting, dry_run)
        loaded.update(built)
        return {**built, **(memory.row() if memory else {})}

    def after_build(part: Callable[[], dict]) -> Callable[[], dict]:
        def guarded() -> dict:
            if "parameters" not in loaded:
                raise PartSkipped(f"{name} was not built (its build part says why)")
            return part()

        return guarded

    def scoring_part(side: int | None, batch: int) -> dict:
        if budget and "scorer" not in loaded:
            check_memory(f"scoring {name}", 2 * architecture(name)["total"] + GIB, budget.max_rss)
        with part_memory(setting, budget) as memory:
            row = scoring_row(loaded, name, side, batch, setting, dry_run, peak)
        if budget:
            budget.observe(row)
        return {**row, **(memory.row() if memory else {})}

    def minimum(kind: str, side: int | None = None, batch: int = 1) -> float | Callable[[], float]:
        if budget is None:
            return setting.budgets.get(kind, 0)
        side = side or int(resolution_of(name, dry_run).max_pixels ** 0.5)
        if kind == "build":
            return lambda: budget.build_s(name)
        if kind == "training":
            return lambda: budget.training_s(name, setting.train_side or side)
        return lambda: budget.scoring_s(name, side, batch, "scorer" in loaded)

    parts = [(f"build {name}", build_part, minimum("build"))]
    if name == TRAINED if train is None else train:
        parts += [
            (
                f"training {kind} {name}",
                after_build(
                    partial(training_in_child, work / name, recipe, setting, work, dry_run, budget)
                    if budget
                    else partial(training, work / name, recipe, setting, work, dry_run)
                ),
                minimum("training"),
            )
            for kind, recipe in TRAINING_RECIPES.items()
            if kind in recipes
        ]
    if score:
        parts += [
            (
                f"scoring {name} {label} batch {batch}",
                after_build(partial(scoring_part, side, batch)),
                minimum("scoring", side, batch),
            )
            for label, side in setting.image_sides.items()
            for batch in setting.batches
        ]
    return parts


def peak_tflops() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return platform.processor() or "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def environment() -> dict:
    """The machine and the versions a CPU measurement depends on."""
    import os

    import transformers

    return {
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def markdown(report: dict) -> str:
    kind = "dry run" if report["dry_run"] else "real sizes"
    lines = [f"# GPU check: {report['device']} ({kind})", ""]
    for name, part in report["parts"].items():
        status = part["status"] + (
            f": {part.get('error') or part.get('reason')}" if part["status"] != "ok" else ""
        )
        lines.append(f"- **{name}** ({part.get('seconds', 0)} s): {status}")
    for kind in ("training", "scoring"):
        rows = {n: p for n, p in report["parts"].items() if n.startswith(kind) and p["status"] == "ok"}
        if rows:
            keys = list(dict.fromkeys(k for p in rows.values() for k in p if k not in ("status", "seconds")))
            lines += [
                "",
                f"## {kind}",
                "",
                "| part | " + " | ".join(keys) + " |",
                "|---|" + "---|" * len(keys),
            ]
            lines += [
                f"| {n} | " + " | ".join(_cell(p.get(k, "")) for k in keys) + " |" for n, p in rows.items()
            ]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def measured_run(path: Path) -> bool:
    """Whether `path` holds the results of a run at real sizes (not a dry run's); an unreadable file counts as one,
    so that it is never replaced unasked."""
    try:
        return json.loads(path.read_text()).get("dry_run") is not True
    except FileNotFoundError:
        return False
    except (ValueError, AttributeError):
        return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, width-reduced configs, the same code path"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no part after this many seconds (300; real size on CPU: 1740, and no part runs past it)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where the random checkpoints go (~17 GB each)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(CHECKED_MODELS),
        choices=[n for family in FAMILIES.values() for n in family.real_size],
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--real-size", action="store_true", help="with --device cpu: the real dimensions in bf16 on the CPU"
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=22.0,
        help="real size on CPU: skip a part estimated above this resident memory (GB), stop one that reaches it",
    )
    parser.add_argument(
        "--recipes", nargs="+", default=list(TRAINING_RECIPES), choices=list(TRAINING_RECIPES)
    )
    parser.add_argument(
        "--keep-measured",
        action="store_true",
        help="keep the parts that an earlier run into --out measured, and run only the others",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier measured run's results in --out"
    )
    parser.add_argument("--training-child", help=argparse.SUPPRESS)  # one training part, in its own process
    args = parser.parse_args(argv)
    if args.training_child:
        training_child(json.loads(args.training_child))
        return {}
    earlier = args.out / "gpu_check.json"
    if measured_run(earlier) and args.dry_run:
        parser.error(
            f"{earlier} holds a measured run's results; a dry run never replaces a measured run's results: "
            "choose another --out"
        )
    if measured_run(earlier) and not (args.overwrite or args.keep_measured):
        parser.error(
            f"{earlier} holds a measured run's results; pass --overwrite to replace them, --keep-measured to "
            "measure only the parts it lacks, or choose another --out"
        )
    if args.device == "cpu" and not (args.real_size or args.dry_run):
        parser.error("--device cpu needs --real-size (or use --dry-run for width-reduced models)")
    if args.real_size and args.device != "cpu":
        parser.error("--real-size is for --device cpu (a GPU run is at real size already)")
    setting = Setting.for_run(args.dry_run, args.device)
    if setting.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run, or --device cpu --real-size, on CPU")
    device, peak = peak_tflops()
    budget_s = args.budget_s or (1740.0 if setting.real_size_cpu else 300.0)
    deadline = time.monotonic() + budget_s
    report = {"device": device, "dry_run": args.dry_run, "bf16_peak_tflops": peak, "parts": {}}
    budget = None
    if setting.real_size_cpu:
        budget = CpuBudget(args.max_rss_gb, deadline)
        report.update(environment(), bf16_matmul_gflop_per_s=budget.matmul_flops_per_s / 1e9)
        report.update(max_rss_gb=args.max_rss_gb, budget_s=budget_s)
    report["parts"]["training full"] = {"status": "skipped", "reason": FULL_FINE_TUNING, "seconds": 0.0}
    args.out.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every part: a run cut short keeps what it measured
        write_atomic(args.out / "gpu_check.json", json.dumps(report, indent=2) + "\n")
        write_atomic(args.out / "gpu_check.md", markdown(report))

    kept = {}
    if args.keep_measured and (args.out / "gpu_check.json").is_file():
        earlier = json.loads((args.out / "gpu_check.json").read_text())["parts"]
        kept = {
            n: part for n, part in earlier.items() if part["status"] == "ok" and not n.startswith("build ")
        }
        report["parts"].update(kept)
        report["kept_from_an_earlier_run"] = sorted(kept)

    def remaining(parts: list) -> list:
        """The model's build and the parts still to measure; nothing when all of them are kept."""
        todo = [part for part in parts[1:] if part[0] not in kept]
        return [parts[0], *todo] if todo else []

    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work_dir) as tmp:
        for name in args.models:
            parts = model_parts(name, Path(tmp), setting, args.dry_run, peak, budget, recipes=args.recipes)
            parts = remaining(parts)
            trained = 1 + sum(part_name.startswith("training ") for part_name, *_ in parts)
            run_parts(parts[:trained], deadline, report["parts"], write)
            if (
                budget
                and name == TRAINED
                and any(report["parts"][part_name]["status"] != "ok" for part_name, *_ in parts[1:trained])
            ):  # the 7B could not train here: its smaller sibling shows the same code path's memory and speed
                fallback = model_parts(
                    FALLBACK, Path(tmp), setting, False, peak, budget, True, False, args.recipes
                )
                run_parts(remaining(fallback), deadline, report["parts"], write)
                shutil.rmtree(Path(tmp) / FALLBACK, ignore_errors=True)
            run_parts(parts[trained:], deadline, report["parts"], write)
            del parts  # its parts hold the loaded scorer: free it before the next model is built
            release_freed_memory()
            shutil.rmtree(Path(tmp) / name, ignore_errors=True)  # ~17 GB each: one on disk at a time
    write()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
