"""The processes of `accelerate launch` as LL-Score's entry points use them (eval.py, `llscore score`, train.py)."""

from __future__ import annotations

import logging
import os

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from llscore.errors import ConfigError

logger = logging.getLogger(__name__)


def use_every_core_when_alone(state: PartialState) -> int:
    """The threads a lone CPU process under `accelerate launch` computes with; returns the count in use.

    Without `--cpu` or a config saying so, accelerate's launcher does not know it starts a CPU process and
    gives it the multi-GPU default of one thread (OMP_NUM_THREADS=1, ACCELERATE_USE_CPU false): the main job
    then ran on one of two cores, 19 min 42 s instead of 13 (docs/training.md). A lone process on the CPU
    gets every core it may run on (its affinity: `taskset` still limits it); several processes keep their
    one thread each, and a launch that knew it ran on the CPU (`--cpu`, `use_cpu`) keeps the count it chose."""
    launched_as_gpu = "ACCELERATE_MIXED_PRECISION" in os.environ and not parse_flag_from_env(
        "ACCELERATE_USE_CPU"
    )
    if state.num_processes == 1 and state.device.type == "cpu" and launched_as_gpu:
        cores = len(os.sched_getaffinity(0))
        if torch.get_num_threads() < cores:
            logger.info("one CPU process under accelerate launch: computing on %d threads, not 1", cores)
            torch.set_num_threads(cores)
    return torch.get_num_threads()


def process_state() -> PartialState:
    """The processes of `accelerate launch` as entry points see them. accelerate's launcher marks CPU processes
    with ACCELERATE_USE_CPU, which `PartialState` (unlike `AcceleratorState`) does not read: without passing it
    on, each CPU process would think it runs alone and score every image."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def end_processes() -> None:
    """Close the process group of `accelerate launch` before a successful entry point returns: on CPU, gloo's
    worker threads still alive when the interpreter shuts down abort the process (SIGABRT), turning a finished
    run into a failed one. Only after success: a process that failed may leave the others in a collective."""
    PartialState().destroy_process_group()


def process_device(device: str | None, state: PartialState) -> str | None:
    """The device a scoring process loads the model on: its own under `accelerate launch` (cuda:<local rank>
    or cpu), refusing a device index that would put every process on one GPU."""
    if state.num_processes == 1:
        return device
    if device is not None and ":" in device:
        raise ConfigError(
            f"--device {device} under {state.num_processes} processes: drop the index (each uses its own)"
        )
    return str(state.device) if device is None or device == state.device.type else device
