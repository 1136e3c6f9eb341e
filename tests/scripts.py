"""Helpers shared by the tests: the repo's scripts (bench/, data_prep/, examples/) as modules, the overrides
of a short training run, `accelerate launch` on CPU processes, and another process holding an output folder."""

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """The script at `relative` (from the repo root) as a module, registered in sys.modules (dataclasses resolve
    annotations through it), its folder importable as `python <script>` makes it."""
    folder = str((REPO / relative).parent)
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def short_run(base: Path, prepared: Path, out: Path, *extra: str) -> list[str]:
    """A short CPU run of the tiny recipe on the test bench."""
    return [
        *("--model_name_or_path", str(base), "--build_tiny_base", "null"),
        *("--prepared_dir", str(prepared), "--generate_mini_bench", "false"),
        *("--data_config", "null"),  # the test bench is prepared with the canonical config
        *("--output_dir", str(out), "--max_steps", "4", "--save_steps", "2", "--eval_strategy", "no"),
        *("--load_best_model_at_end", "false", "--per_device_train_batch_size", "2", "--logging_steps", "1"),
        *("--validate_before_training", "false", "--report_to", "none"),
        *extra,
    ]


def accelerate_launch(
    args: list[str], processes: int, accelerate_config: str = "cpu", env: dict | None = None
):
    """`accelerate launch --num_processes N <args>` from the repo root as a user would type it, on CPU processes
    (one thread each)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "WANDB_MODE": "offline",
        **(env or {}),
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [f"configs/accelerate/{accelerate_config}.yaml", "--num_processes", str(processes), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@contextlib.contextmanager
def folder_held_by(folder: Path, command: str = "train.py"):
    """Another process holding `folder` (`llscore.files.claim_folder`) until the block ends; yields its pid."""
    code = (
        "import sys, time; from llscore.files import claim_folder; claim_folder(sys.argv[1], sys.argv[2]); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), command], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
