"""How entry points talk to people: progress as `[llscore] ...` lines from the main process only, and on an
expected failure one line that names the file, row, key or repo and what to do, exit status 2; the full
traceback only when asked for (`--debug` or `LLSCORE_DEBUG=1`)."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys

DEBUG_VARIABLE = "LLSCORE_DEBUG"


class LLScoreError(ValueError):
    """An expected failure: bad input, a recipe or checkpoint that cannot be used, a refused push. Its message
    is one line that names the file, row, key or repo; entry points catch this class and print that line (a
    `ValueError`, so code that caught the old per-module errors as `ValueError` still does)."""


class ConfigError(LLScoreError):
    """A recipe, override or option that cannot be used; the message names the key and what is valid."""


class DataError(LLScoreError):
    """Unusable input data; the message starts with the file, the 1-based line (header = 1) and the column."""

    def __init__(
        self, message: str, file: str | None = None, line: int | None = None, column: str | None = None
    ):
        where = [p for p in (file, line is not None and f"line {line}", column and f"column {column!r}") if p]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.file, self.line, self.column = file, line, column


class ImageError(LLScoreError):
    """An image that cannot be used; the message names the file."""


class CheckpointError(LLScoreError):
    """A checkpoint directory that cannot be used as an LL-Score checkpoint."""


class EvaluationError(LLScoreError):
    """An evaluation that cannot run as asked (missing checkpoint, empty split, ...)."""


class HubError(LLScoreError):
    """A push that cannot start or that the Hub refused; the message never contains the token."""


EXPECTED_ERRORS = (LLScoreError, FileExistsError, FileNotFoundError)
"""What an entry point reports in one line: LL-Score's own errors and a file that is missing or in the way."""


def one_line(err: BaseException) -> str:
    """The whole message of `err` on one line, its lines joined by "; "."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


def reason(err: Exception) -> str:
    """`Type: first line of the message`, for one-line errors."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


def count_argument(minimum: int):
    """An argparse type for a whole number of at least `minimum` (a batch size, a number of resamples)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true", help=f"full tracebacks (also {DEBUG_VARIABLE}=1)")


def fail(program: str, err: BaseException, debug: bool = False) -> int:
    """Print `program: error: ...` and return 2; re-raise `err` (with its traceback) when debugging. Under
    `accelerate launch` only the first process to fail prints (`first_to_fail`): the others met the same error
    (one recipe, one checkpoint) or a later one. Call it from the `except` block that caught `err`."""
    if debug or debugging():
        raise err
    if first_to_fail():
        print(f"{program}: error: {one_line(err)}", file=sys.stderr)
    return 2


FAILURES_KEY = "llscore/failures"
STORE_TIMEOUT_S = 10


def _process_group():
    """`torch.distributed` when this process is in a group of two or more, else None (never imported here)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return dist


def first_to_fail() -> bool:
    """Whether this process is the first of its `accelerate launch` run to fail, counted in the group's store
    (the launcher's, which outlives the processes). Before the processes know each other only rank 0 speaks: what
    fails then (the command line, the recipe) fails alike in every process. Alone, or when the store cannot be
    reached, a process is first."""
    dist = _process_group()
    if dist is None:
        return os.environ.get("RANK", "0") == "0"
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(datetime.timedelta(seconds=STORE_TIMEOUT_S))
        return store.add(FAILURES_KEY, 1) == 1
    except Exception:  # a store hosted by a process that has exited: say it here
        return True


PEER_STOPPED = ("closed by peer", "reset by peer", "remote worker crashing")
"""What gloo says (in a plain RuntimeError) when a collective breaks because another process exited."""


def peer_stopped(err: BaseException) -> bool:
    """Whether `err` is a collective of `accelerate launch` broken by another process stopping: torch's
    `DistError`, or gloo's "Connection closed by peer", in a process group of two or more."""
    if _process_group() is None:  # a process that has no group has no peer
        return False
    distributed = any(cls.__name__ == "DistError" for cls in type(err).__mro__)
    return distributed or (isinstance(err, RuntimeError) and any(s in str(err) for s in PEER_STOPPED))


def fail_after_peer(err: BaseException, debug: bool = False) -> int:
    """Return 2 and print nothing when `err` is this process's collective broken because another process of
    `accelerate launch` stopped: that process said why (its one line, or its traceback), and a "Connection closed
    by peer" traceback here would bury it. Anything else, or debugging, re-raises `err`. Call it from the `except`
    block that caught `err`."""
    if debug or debugging() or not peer_stopped(err):
        raise err
    return 2


def log_progress(main_process: bool = True) -> None:
    """Show LL-Score's own progress messages (logger `llscore`) on stderr, on the main process only; other
    libraries' logging is left as it is."""
    logger = logging.getLogger("llscore")
    if not any(getattr(h, "llscore_progress", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[llscore] %(message)s"))
        handler.llscore_progress = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
