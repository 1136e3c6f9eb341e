"""Writing outputs: atomically (a reader never sees a half-written file, a crash keeps the previous one), and
JSON with numpy values."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write to a temporary sibling, then rename over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


def json_default(value):
    """`json.dumps(..., default=json_default)`: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
