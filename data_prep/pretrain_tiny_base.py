"""Pretrain the tiny base model on low-level questions over synthetic scenes (no human label, no bench scene).

    python data_prep/pretrain_tiny_base.py --out assets/tiny-qwen2_5_vl-lowlevel.safetensors [--work-dir DIR]

Writes the weights (loaded by `llscore_sim.tiny.build_tiny_checkpoint(weights=...)`, which the tiny recipe does
through `data.tiny_base_weights`) and, beside them, a JSON record of the settings, the measurements, the wall
time and the file's SHA-256. About 50 minutes on 2 CPU cores with the default settings; docs/training.md.
"""

# ruff: noqa: E402  (the imports after the guard below)
import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from llscore.hub_kernels import keep_bitsandbytes_off_the_hub

# first: llscore.trainer, imported below, imports transformers' Trainer and so bitsandbytes, which would ask the
# Hub for a kernel
keep_bitsandbytes_off_the_hub()

from transformers import AutoModelForImageTextToText

from llscore_sim.pretraining import PretrainingSettings, pretrain_tiny_base
from llscore_sim.tiny import TINY_SPECS, save_weights

SHAPE_ARGUMENTS = ("width", "layers", "vision_width", "vision_layers", "merge_size")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="weights file to write (.safetensors)")
    parser.add_argument("--family", default="qwen2_5_vl", choices=sorted(TINY_SPECS))
    parser.add_argument(
        "--work-dir", type=Path, help="where the intermediate files go (default: a temporary folder)"
    )
    parser.add_argument(
        "--pool-dir", type=Path, help="where the synthetic images go; reused when made with the same settings"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    sizes = parser.add_argument_group("shape (default: the shipped one; build_tiny_checkpoint's arguments)")
    for name in SHAPE_ARGUMENTS:
        sizes.add_argument(f"--{name.replace('_', '-')}", type=int)
    for field in dataclasses.fields(PretrainingSettings):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default
        )
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        print(
            f"pretrain_tiny_base.py: error: {args.out} exists; pass --overwrite to replace it",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shape = {name: getattr(args, name) for name in SHAPE_ARGUMENTS if getattr(args, name) is not None}
    settings = PretrainingSettings(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainingSettings)}
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = args.work_dir or Path(scratch)
        report = pretrain_tiny_base(
            work_dir / "pretrained", work_dir, args.family, settings, shape, args.pool_dir
        )
        model = AutoModelForImageTextToText.from_pretrained(str(work_dir / "pretrained"))
        save_weights(model, args.out)
    record = {
        "family": args.family,
        "shape": shape,
        "settings": dataclasses.asdict(settings),
        **report,
        "wall_time_s": round(time.perf_counter() - start),
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "command": "python data_prep/pretrain_tiny_base.py " + " ".join(argv or sys.argv[1:]),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
