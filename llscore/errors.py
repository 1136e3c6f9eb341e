"""How entry points talk to people: progress as `[llscore] ...` lines from the main process only, and on an
expected failure one line that names the file, row, key or repo and what to do, exit status 2; the full
traceback only when asked for (`--debug` or `LLSCORE_DEBUG=1`)."""

from __future__ import annotations

import argparse
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
    """Print `program: error: ...` and return 2; re-raise `err` (with its traceback) when debugging. Call it
    from the `except` block that caught `err`."""
    if debug or debugging():
        raise err
    print(f"{program}: error: {one_line(err)}", file=sys.stderr)
    return 2


PEER_STOPPED = ("closed by peer", "reset by peer", "remote worker crashing")
"""What gloo says (in a plain RuntimeError) when a collective breaks because another process exited."""


def peer_stopped(err: BaseException) -> bool:
    """Whether `err` is a collective of `accelerate launch` broken by another process stopping: torch's
    `DistError`, or gloo's "Connection closed by peer", in a process group of two or more."""
    dist = sys.modules.get(
        "torch.distributed"
    )  # never imported here: a process that has no group has no peer
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
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
