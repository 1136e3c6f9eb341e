"""The scoring parts of the GPU check: images/s of the one-pass scorer, a bare forward and generate-and-parse at
one image size and batch size, prefill FLOPs and the fraction of the GPU's bf16 peak (bench/gpu_check.py;
docs/performance.md)."""

from __future__ import annotations

import platform

import torch

from llscore.api import LLScore
from llscore.prompts import LLScoreConfig
from llscore.scoring import answer_logits

from .common import Setting, bench_script, random_images, resolution_of, timed

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
    naive = bench_script("bench_scoring").naive_generate_scorer
    count = batch * setting.repeats
    restored, degraded = random_images((side, side), count, 0), random_images((side, side), count, 1)
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
    seconds = {name: timed(way, setting.device) for name, way in ways.items()}
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


def peak_tflops() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return platform.processor() or "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
