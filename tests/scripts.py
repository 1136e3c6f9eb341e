"""Import the repo's scripts (bench/, data_prep/, examples/), which are not a package, as modules."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """The script at `relative` (from the repo root) as a module, registered in sys.modules (dataclasses resolve
    annotations through it)."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
