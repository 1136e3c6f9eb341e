"""LL-Bench-mini: a small LL-Bench generated offline from photographs that ship with installed packages.

Real LL-Bench cannot be downloaded offline, so training, evaluation and tests run on this simulation of it:
16 degradation tasks, restoration models of both families with realistic failure modes (hallucinations
included), simulated annotators who judge only what LL-Bench's annotators are shown (the degraded input and
the restorations), and Bradley–Terry scores fitted from their votes (docs/llbench_mini.md).
"""

from .bench import make_mini_bench
from .degradations import TASKS
from .restorers import MODELS

__all__ = ["MODELS", "TASKS", "make_mini_bench"]
