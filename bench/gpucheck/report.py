"""What a GPU check writes: its gpu_check.md beside gpu_check.json, the machine and versions a CPU measurement
depends on, and whether a results file holds a measured run, never replaced unasked (bench/gpu_check.py)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


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
