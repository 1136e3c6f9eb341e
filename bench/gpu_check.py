"""The real-size recipes on one GPU in minutes: scoring throughput and training step time / memory, measured with
random weights at the real shapes (memory and speed do not depend on the weights' values).

    python bench/gpu_check.py [--out bench/results] [--budget-s 300] [--models qwen2_5_vl_7b qwen3_vl_8b]
    python bench/gpu_check.py --dry-run [--out DIR]    # the same code on CPU, width-reduced configs (run in CI)

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
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import shutil
import sys
import tempfile
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

from llscore.config import load_config  # noqa: E402
from llscore.evaluator import LLScore  # noqa: E402
from llscore.files import write_atomic  # noqa: E402
from llscore.modeling import load_for_training, load_processor, write_llscore_config  # noqa: E402
from llscore.prompts import LLScoreConfig, ResolutionRule  # noqa: E402
from llscore.scoring import answer_logits  # noqa: E402

FAMILY = {"qwen2_5_vl_7b": "qwen2_5_vl", "qwen3_vl_8b": "qwen3_vl"}
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
RECIPE_OF = {"qwen2_5_vl_7b": "llscore_qwen", "qwen3_vl_8b": "llscore_qwen3vl"}
"""The recipe whose resolution rule each model is scored under."""
TRAINED = "qwen2_5_vl_7b"
"""The model of the LoRA and QLoRA recipes, the one trained here."""
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

    @classmethod
    def for_run(cls, dry_run: bool) -> Setting:
        if dry_run:
            return cls("cpu", "float32", {"56x56": 56, "max_pixels": None}, (1, 2), 1, 2, {})
        budgets = {"build": 45, "training": 45, "scoring": 20}
        return cls("cuda", "bfloat16", {"448x448": 448, "max_pixels": None}, (1, 8, 32), 2, 6, budgets)


def resolution_of(name: str, dry_run: bool) -> ResolutionRule:
    """The resolution rule of the model's recipe (a dry run keeps the tiny models' 56-112 px)."""
    if dry_run:
        return ResolutionRule(3136, 12544)
    return load_config(REPO / f"configs/{RECIPE_OF[name]}.yaml", ["--bf16", "false"]).resolution


def run_parts(
    parts: list[tuple[str, Callable[[], dict], float]],
    deadline: float,
    results: dict | None = None,
    on_result: Callable[[], None] = lambda: None,
) -> dict[str, dict]:
    """Run each part that its minimum time fits in before `deadline`; a failure is recorded and the rest runs.
    `on_result` is called after every part (to write what has been measured so far)."""
    results = {} if results is None else results
    for name, part, minimum in parts:
        left = deadline - time.monotonic()
        if left < minimum:
            results[name] = {"status": "skipped", "reason": f"needs ~{minimum:.0f} s, {left:.0f} s left"}
            continue
        start = time.monotonic()
        try:
            results[name] = {"status": "ok", **part()}
        except Exception as err:  # an OOM or a missing kernel in one part must not lose the others
            lines = str(err).strip().splitlines()
            results[name] = {
                "status": "failed",
                "error": f"{type(err).__name__}: {lines[0] if lines else ''}"[:400],
            }
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

    from llscore.tiny import _model_config

    values = json.loads((REPO / "configs/models" / f"{name}.json").read_text())
    values.pop("_comment")
    if dry_run:
        config = _model_config(FAMILY[name], tokenizer)
        config.text_config.vocab_size = values["text_config"]["vocab_size"]
        return config
    config = AutoConfig.for_model(**values)
    ids = tokenizer.convert_tokens_to_ids
    config.image_token_id, config.video_token_id = ids("<|image_pad|>"), ids("<|video_pad|>")
    config.vision_start_token_id, config.vision_end_token_id = ids("<|vision_start|>"), ids("<|vision_end|>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.eos_token_id = ids("<|im_end|>")
    return config


def build(name: str, folder: Path, setting: Setting, dry_run: bool) -> dict:
    """A random model of `name` saved with a processor and the default prompt contract: an LL-Score checkpoint."""
    from transformers import AutoModelForImageTextToText

    from llscore.tiny import build_tiny_checkpoint

    tiny = build_tiny_checkpoint(FAMILY[name], folder / "tokenizer")
    processor = load_processor(tiny, LLScoreConfig())
    config = model_config(name, processor.tokenizer, dry_run)
    torch.manual_seed(0)
    with torch.device(setting.device):
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, setting.dtype))
    out = folder / name
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_llscore_config(LLScoreConfig(), out)
    parameters = {
        "total": sum(p.numel() for p in model.parameters()),  # a tied lm_head is counted once
        "vision": sum(p.numel() for n, p in model.named_parameters() if "visual" in n),
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
    """Images/s of the one-pass scorer, a bare forward and generate-and-parse, at one image size and batch size."""
    naive = _sibling("bench_scoring").naive_generate_scorer
    count = batch * setting.repeats
    restored, degraded = _images((side, side), count, 0), _images((side, side), count, 1)
    scorer.score(restored[:batch], degraded[:batch], batch_size=batch)  # warm-up
    naive(scorer, restored[:batch], degraded[:batch], batch)
    inputs = {
        task: tensors.to(scorer.device)
        for task, tensors in scorer._inputs(restored[:batch], degraded[:batch], True).items()
    }

    def bare() -> None:
        with torch.no_grad():
            for _ in range(setting.repeats):
                for task in inputs:
                    answer_logits(scorer.model, inputs[task])

    seconds = {
        "one_pass": _timed(
            lambda: scorer.score(restored, degraded, batch_size=batch, workers=2), setting.device
        ),
        "one_pass_quality": _timed(
            lambda: scorer.score(restored, degraded, batch_size=batch, hallucination=False, workers=2),
            setting.device,
        ),
        "bare_forward": _timed(bare, setting.device),
        "generate_quality": _timed(lambda: naive(scorer, restored, degraded, batch), setting.device),
    }
    row = {f"{name}_images_per_s": count / s for name, s in seconds.items()}
    row["visual_tokens_per_image"] = int((inputs["quality"]["input_ids"] == _image_token(scorer)).sum()) // (
        2 * batch
    )
    row["prefill_gflops_per_image"] = 2 * prefill_flops(inputs["quality"], parameters) / 1e9  # two questions
    return row


def _image_token(scorer: LLScore) -> int:
    return scorer.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")


def scoring_row(
    loaded: dict, name: str, side: int | None, batch: int, setting: Setting, dry_run: bool, peak: float | None
) -> dict:
    """One (image size, batch) row with the ratios the targets are about; the model is loaded once per model."""
    rule = resolution_of(name, dry_run)
    if "scorer" not in loaded:
        loaded["scorer"] = LLScore.from_pretrained(loaded["path"], dtype=setting.dtype, device=setting.device)
    model = loaded["scorer"]
    scorer = LLScore(model.model, model.processor, LLScoreConfig(resolution=rule))
    side = side or int(rule.max_pixels**0.5)
    row = {
        "image_side": side,
        "batch": batch,
        **measure_batch(scorer, side, batch, setting, loaded["parameters"]),
    }
    row["scorer_over_bare_forward"] = row["one_pass_images_per_s"] / row["bare_forward_images_per_s"]
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


def training(ckpt: Path, recipe: str, setting: Setting, work: Path, dry_run: bool) -> dict:
    """Step time, pairs/s and peak memory of `recipe` on one device (its model, LoRA, loss and batch settings)."""
    from transformers import TrainerCallback

    from llscore.scoring import InputBuilder
    from llscore.trainer import LLScoreTrainer, PairCollator

    overrides = ["--model.model_name_or_path", str(ckpt), "--output_dir", str(work / recipe)]
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
        overrides += ["--bf16", "false", "--model.dtype", "float32", "--use_cpu", "true"]
        overrides += ["--resolution.min_pixels", "3136", "--resolution.max_pixels", "12544"]
    config = load_config(REPO / f"configs/{recipe}.yaml", overrides)
    llscore_config = LLScoreConfig(resolution=config.resolution)
    model, processor = load_for_training(config.model, config.lora, llscore_config)
    batch = config.training.per_device_train_batch_size
    side = int(config.resolution.max_pixels**0.5)
    steps: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - self.start)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = LLScoreTrainer(
        model=model,
        args=config.training,
        train_dataset=_pairs((side, side), batch * setting.train_steps, work / f"{recipe}_pairs"),
        data_collator=PairCollator(
            InputBuilder(processor, llscore_config), config.training.hallucination_bce > 0, True, 0
        ),
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
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    estimate = _sibling("estimate_memory")  # for Qwen2.5-VL-7B at this batch and resolution, on one GPU
    rows = estimate.estimate(estimate.parameter_counts(config.lora.r), 1, batch, side * side // 784)
    out["estimate_7b_gib"] = rows[ESTIMATE_ROW[recipe]]["total_gib"]
    del trainer, model
    return out


def model_parts(name: str, work: Path, setting: Setting, dry_run: bool, peak: float | None) -> list:
    """Build the model, train it (the recipes' own model only), then score with it, one part per row."""
    loaded: dict = {"path": work / name}

    def build_part() -> dict:
        built = build(name, work, setting, dry_run)
        loaded.update(built)
        return built

    def after_build(part: Callable[[], dict]) -> Callable[[], dict]:
        def guarded() -> dict:
            if "parameters" not in loaded:
                raise RuntimeError(f"{name} was not built (see its build part)")
            return part()

        return guarded

    parts = [(f"build {name}", build_part, setting.budgets.get("build", 0))]
    if name == TRAINED:
        parts += [
            (
                f"training {kind} {name}",
                after_build(partial(training, work / name, recipe, setting, work, dry_run)),
                setting.budgets.get("training", 0),
            )
            for kind, recipe in TRAINING_RECIPES.items()
        ]
    parts += [
        (
            f"scoring {name} {label} batch {batch}",
            after_build(partial(scoring_row, loaded, name, side, batch, setting, dry_run, peak)),
            setting.budgets.get("scoring", 0),
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


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device']} ({'dry run' if report['dry_run'] else 'real sizes'})", ""]
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, width-reduced configs, the same code path"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results")
    parser.add_argument("--budget-s", type=float, default=300.0, help="start no part after this many seconds")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where the random checkpoints go (~17 GB each)"
    )
    parser.add_argument("--models", nargs="+", default=list(FAMILY), choices=list(FAMILY))
    args = parser.parse_args(argv)
    setting = Setting.for_run(args.dry_run)
    if setting.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run on CPU")
    device, peak = peak_tflops()
    deadline = time.monotonic() + args.budget_s
    report = {"device": device, "dry_run": args.dry_run, "bf16_peak_tflops": peak, "parts": {}}
    report["parts"]["training full"] = {"status": "skipped", "reason": FULL_FINE_TUNING, "seconds": 0.0}
    args.out.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every part: a run cut short keeps what it measured
        write_atomic(args.out / "gpu_check.json", json.dumps(report, indent=2) + "\n")
        write_atomic(args.out / "gpu_check.md", markdown(report))

    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work_dir) as tmp:
        for name in args.models:
            run_parts(
                model_parts(name, Path(tmp), setting, args.dry_run, peak), deadline, report["parts"], write
            )
            shutil.rmtree(Path(tmp) / name, ignore_errors=True)  # ~17 GB each: one on disk at a time
    write()
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
