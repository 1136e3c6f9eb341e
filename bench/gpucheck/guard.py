"""The part guard of the GPU check: each part runs, is skipped (its minimum time or estimated memory does not
fit) or is stopped (it reached the memory limit or the deadline), and a failure is recorded while the other parts
still run; the resident-memory watcher that measures a CPU part and stops it (bench/gpu_check.py;
docs/performance.md)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from llscore.errors import reason

from .common import GIB

if TYPE_CHECKING:
    from .budget import CpuBudget
    from .common import Setting


class PartSkipped(Exception):
    """Raised by a part that decides, before it allocates anything, not to run (the message says why)."""


def run_parts(
    parts: list[tuple[str, Callable[[], dict], float | Callable[[], float]]],
    deadline: float,
    results: dict | None = None,
    on_result: Callable[[], None] = lambda: None,
) -> dict[str, dict]:
    """Run each part that its minimum time (seconds, or a function estimating them when the part is reached) fits
    in before `deadline`; a failure is recorded and the rest runs. `on_result` is called after every part (to
    write what has been measured so far)."""
    results = {} if results is None else results
    for name, part, minimum in parts:
        start = time.monotonic()
        try:
            left = deadline - start
            needed = minimum() if callable(minimum) else minimum
            if left < needed:
                raise PartSkipped(f"needs ~{needed:.0f} s, {left:.0f} s left")
            results[name] = {"status": "ok", **part()}
        except PartSkipped as skip:
            results[name] = {"status": "skipped", "reason": str(skip)}
        except PartStopped as stop:
            results[name] = {"status": "stopped", "reason": str(stop)}
        except Exception as err:  # an OOM or a missing kernel in one part must not lose the others
            results[name] = {"status": "failed", "error": reason(err)[:400]}
        results[name]["seconds"] = round(time.monotonic() - start, 1)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        on_result()
    return results


class PartStopped(BaseException):
    """A part stopped while it ran, because it reached the memory limit or the time budget (the message says).
    A BaseException, as KeyboardInterrupt is: raised asynchronously anywhere in the part, it must not be taken
    for an ordinary error by a library's `except Exception`."""


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system, so that resident memory means what is live."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """The resident memory of this process before and at its peak while a block runs (sampled every 10 ms): what
    a part uses on CPU, where there are no CUDA memory counters. With a limit (bytes) or a deadline (monotonic
    seconds), a part that reaches either is interrupted with `PartStopped` (raised in the thread that entered the
    block, at its next Python instruction: a signal would go to whatever SIGINT handler a library installed),
    rather than swap, be killed by the kernel or run past the budget. Given a child process (`pid`), it watches
    that process instead and ends it at once, even inside a long C call."""

    def __init__(
        self,
        limit: float | None = None,
        deadline: float | None = None,
        pid: int | None = None,
        held_elsewhere: float = 0.0,
    ):
        self.limit, self.deadline, self.pid, self.stopped = limit, deadline, pid, ""
        self.held_elsewhere = held_elsewhere  # resident memory of the watching process, counted in the limit
        self._owner = threading.get_ident()

    def __enter__(self) -> PeakMemory:
        import psutil

        release_freed_memory()
        self._process = psutil.Process(self.pid)
        self.baseline = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.NoSuchProcess:  # the child has ended
                return
            if self.stopped:
                continue
            if self.limit is not None and self.peak + self.held_elsewhere > self.limit:
                total = (self.peak + self.held_elsewhere) / 1e9
                self.stopped = f"{total:.1f} GB resident passed the {self.limit / 1e9:g} GB limit"
            elif self.deadline is not None and time.monotonic() > self.deadline:
                self.stopped = "the time budget ran out"
            if self.stopped and self.pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self._process.kill()
            elif self.stopped:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._owner), ctypes.py_object(PartStopped)
                )

    def __exit__(self, kind, value, traceback) -> None:
        import psutil

        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.peak = max(self.peak, self._process.memory_info().rss)
        if self.stopped and (kind is not None or self.pid is not None):
            raise PartStopped(
                f"stopped: {self.stopped}; {self.peak / 1e9:.1f} GB at the peak, before the stop took effect"
            ) from None

    def row(self) -> dict:
        return {
            "rss_before_gib": self.baseline / GIB,
            "peak_rss_gib": self.peak / GIB,
            "part_rss_gib": (self.peak - self.baseline) / GIB,
        }


def current_rss() -> int:
    import psutil

    release_freed_memory()
    return psutil.Process().memory_info().rss


MEMORY_MARGIN = 1.1
"""A part starts only if 1.1x its estimated memory fits: the estimates are within ~5 % at real size
(docs/performance.md), and the limit is a ceiling, not a target."""


def check_memory(part: str, needed_bytes: float, limit: float | None, held_elsewhere: float = 0.0) -> None:
    """Skip a part whose estimated peak (this process now, what other processes of the check hold, and what the
    part adds, with the margin) exceeds `limit` bytes."""
    if limit is None:
        return
    peak = current_rss() + held_elsewhere + MEMORY_MARGIN * needed_bytes
    if peak > limit:
        raise PartSkipped(f"{part}: estimated peak {peak / 1e9:.1f} GB > --max-rss-gb {limit / 1e9:g}")


def part_memory(setting: Setting, budget: CpuBudget | None):
    """Peak resident memory on CPU (with the real-size budget's limit and deadline); nothing on a GPU, whose
    parts read CUDA's own counters."""
    if setting.device != "cpu":
        return contextlib.nullcontext()
    return PeakMemory(budget.max_rss, budget.deadline) if budget else PeakMemory()
