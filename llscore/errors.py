"""How entry points talk to people: progress as `[llscore] ...` lines from the main process only, and on an
expected failure one line that names the file, row, key or repo and what to do, exit status 2; the full
traceback only when asked for (`--debug` or `LLSCORE_DEBUG=1`)."""

from __future__ import annotations

import logging
import os
import sys

DEBUG_VARIABLE = "LLSCORE_DEBUG"


class ConfigError(ValueError):
    """A recipe, override or option that cannot be used; the message names the key and what is valid."""


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true", help=f"full tracebacks (also {DEBUG_VARIABLE}=1)")


def fail(program: str, err: BaseException, debug: bool = False) -> int:
    """Print `program: error: ...` and return 2; re-raise `err` (with its traceback) when debugging. Call it
    from the `except` block that caught `err`."""
    if debug or debugging():
        raise err
    message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"{program}: error: {message}", file=sys.stderr)
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
