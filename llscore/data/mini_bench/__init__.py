"""LL-Bench-mini: a small LL-Bench (DESIGN.md §2) generated offline from scikit-image's photographs.

Real LL-Bench cannot be downloaded offline, so training, evaluation and tests run on this simulation of it:
16 degradation tasks, restoration models of both families with realistic failure modes (hallucinations
included), simulated annotators voting on a hidden utility, and Bradley–Terry scores fitted from their votes.
"""

from .bench import make_mini_bench
from .degradations import TASKS
from .restorers import MODELS

__all__ = ["MODELS", "TASKS", "make_mini_bench"]
