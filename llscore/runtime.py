"""How a checkpoint runs when it scores: the backend by name, the dtype, the device and the data-loading
workers. One group of options for every entry point that scores (eval.py, `llscore score`), so that they cannot
drift apart (docs/architecture.md). Light: no torch, so that `llscore --help` stays fast."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from llscore.errors import count_argument

DTYPE_NAMES = ("float32", "bfloat16", "float16")
DEFAULT_BACKEND = "transformers"


@dataclass(frozen=True)
class RuntimeOptions:
    """`backend`: a name registered in `llscore.backends`; `device` None: where the weights load; `workers`:
    DataLoader processes preparing the next batches while the model runs."""

    backend: str = DEFAULT_BACKEND
    dtype: str = "float32"
    device: str | None = None
    workers: int = 0

    def __post_init__(self):
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {self.dtype!r}")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """`--backend --dtype --device --workers`, as every scoring entry point takes them."""
    group = parser.add_argument_group("runtime (how the checkpoint runs)")
    group.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        help="scoring backend by name (llscore.backends; default transformers)",
    )
    group.add_argument(
        "--dtype", default="float32", choices=DTYPE_NAMES, help="weights' dtype (bfloat16 on GPUs for a 7B)"
    )
    group.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: where the model loads)"
    )
    group.add_argument(
        "--workers",
        type=count_argument(0),
        default=0,
        help="DataLoader worker processes preparing the next batches while the model runs (default 0: in this "
        "process, the fastest when the model runs on the same few CPU cores; on a GPU machine try 2-4)",
    )


def runtime_options(args: argparse.Namespace, device: str | None = None) -> RuntimeOptions:
    """The parsed group; `device` replaces `--device` (each process's own under `accelerate launch`)."""
    return RuntimeOptions(
        args.backend, args.dtype, device if device is not None else args.device, args.workers
    )
