"""Writing outputs: atomically (a reader never sees a half-written file, a crash keeps the previous one), JSON
with numpy values, and one writer per output folder (`claim_folder`)."""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np

from llscore.errors import LLScoreError


class NoSpaceError(LLScoreError):
    """A full disk (or quota): the message names the file that could not be written."""


def new_file_mode() -> int:
    """The mode `open()` gives a new file here: 0o666 less the umask (which can only be read by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def weights_like_other_files(folder: str | Path) -> None:
    """safetensors writes its files owner-only (0o600) where every other file of a checkpoint gets the umask's
    mode (`new_file_mode`): those who may read a checkpoint's configs may read its weights too."""
    mode = new_file_mode()
    for path in Path(folder).glob("*.safetensors"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def _write_aside(path: Path, data: str | bytes) -> str:
    """`data` in a new, unguessable temporary sibling of `path` (`mkstemp`, O_EXCL: a link planted beside `path`
    is never written through), with the permissions of the file it will replace (a new file: `new_file_mode`,
    not mkstemp's owner-only 0o600); returns its name, or removes it if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.is_file() else new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data if isinstance(data, bytes) else data.encode())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_all_atomic(files: dict[Path, str | bytes]) -> list[Path]:
    """Write every file aside (`_write_aside`), and only once all of them are written rename each over its path
    (atomic on POSIX): a failure on the way, a full disk say, replaces none of them and leaves no temporary
    file behind; a full disk is one `NoSpaceError` naming the file."""
    aside: dict[Path, str] = {}
    path = None
    try:
        for path, data in files.items():
            aside[Path(path)] = _write_aside(Path(path), data)
        for path, tmp in list(aside.items()):
            os.replace(tmp, path)
            del aside[path]
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise NoSpaceError(f"{path}: no space left on its device; free some and run again") from err
    finally:
        for tmp in aside.values():
            os.unlink(tmp)
    return [Path(path) for path in files]


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Replace `path` with `data` atomically (`write_all_atomic`): a reader never sees a half-written file, and a
    failure keeps the previous one."""
    return write_all_atomic({Path(path): data})[0]


def json_default(value):
    """`json.dumps(..., default=json_default)`: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


_CLAIMS: dict[Path, object] = {}
"""Open lock files of the folders this process claimed: the lock lives as long as the process."""


def claim_folder(folder: str | Path, command: str) -> Path:
    """Take an exclusive lock on `folder` for the rest of this process, so that a second run writing into the same
    folder fails at once instead of both "succeeding" with one's results lost. The lock file sits beside the
    folder (`.NAME.lock`, holding the owner's pid and host); the OS releases it when the process exits or
    crashes. Claiming a folder this process already holds is a no-op."""
    folder = Path(folder).expanduser().resolve()
    if folder in _CLAIMS:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.lock"
    try:  # never through a link planted at the lock's name (its target would be rewritten); emptied only once held
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise FileExistsError(
            f"{lock} is a link, not LL-Score's lock file; remove it before running {command} into {folder}"
        ) from None
    handle = os.fdopen(fd, "r+")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise FileExistsError(f"{lock} is not a plain file; remove it before running {command} into {folder}")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FileExistsError(
            f"{folder} is being written by {holder}; wait for it to finish or choose another folder for {command}"
        ) from None
    handle.truncate()  # held now: the previous holder's line goes, this one's is written
    handle.write(f"{command} (pid {os.getpid()} on {socket.gethostname()})\n")
    handle.flush()
    _CLAIMS[folder] = handle
    atexit.register(handle.close)  # released at exit anyway; closed here so no unclosed file is reported
    return folder
