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
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # llscore and llscore_sim, from any working folder
sys.path.insert(0, str(BENCH))  # the gpucheck package beside this script, as when it runs as a script

from gpucheck.budget import CpuBudget  # noqa: E402
from gpucheck.common import (  # noqa: E402
    CHECKED_MODELS,
    FALLBACK,
    FULL_FINE_TUNING,
    REPO,
    TRAINED,
    TRAINING_RECIPES,
    Setting,
)
from gpucheck.common import bench_script as _sibling  # noqa: E402
from gpucheck.guard import (  # noqa: E402
    PartSkipped,
    PeakMemory,
    check_memory,
    current_rss,
    release_freed_memory,
    run_parts,
)
from gpucheck.models import build, fill_random  # noqa: E402
from gpucheck.plan import model_parts  # noqa: E402
from gpucheck.report import environment, markdown, measured_run  # noqa: E402
from gpucheck.scoring import peak_tflops  # noqa: E402
from gpucheck.training import quantized_weights_on_cpu, training_child, training_in_child  # noqa: E402

from llscore.families import FAMILIES  # noqa: E402
from llscore.files import write_atomic  # noqa: E402
from llscore.hub_kernels import keep_bitsandbytes_off_the_hub  # noqa: E402

__all__ = [  # what tests/test_gpu_check.py reaches through this script, beside main
    "REPO",
    "CpuBudget",
    "PartSkipped",
    "PeakMemory",
    "Setting",
    "_sibling",
    "build",
    "check_memory",
    "current_rss",
    "fill_random",
    "main",
    "model_parts",
    "quantized_weights_on_cpu",
    "run_parts",
    "training_in_child",
]


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
    keep_bitsandbytes_off_the_hub()  # before loading a model imports bitsandbytes (docs/architecture.md)
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
