"""write_atomic: a fresh, unguessable temporary file beside the target, never a planted link, nothing left over."""

import os
import stat

import pytest
from scripts import folder_held_by

from llscore import files
from llscore.files import write_atomic


def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    out = tmp_path / "out" / "metrics.json"
    out.parent.mkdir()
    (out.parent / f".{out.name}.tmp-{os.getpid()}").symlink_to(victim)
    write_atomic(out, '{"srcc": 0.8}\n')
    assert out.read_text() == '{"srcc": 0.8}\n' and not out.is_symlink()
    assert victim.read_text() == "not yours"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # readable as an ordinary file, not mkstemp's 0o600
    out.chmod(0o640)
    write_atomic(out, "{}\n")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # a replaced file keeps its permissions


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "scores.csv"
    write_atomic(out, b"old")

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(out, "new")
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_a_claimed_folder_refuses_a_second_writer_until_the_first_exits(tmp_path):
    folder = tmp_path / "run"
    with folder_held_by(folder) as pid, pytest.raises(FileExistsError) as refused:
        files.claim_folder(folder, "eval.py")
    assert f"being written by train.py (pid {pid} on " in str(refused.value)
    assert files.claim_folder(folder, "eval.py") == folder.resolve()  # a crashed holder leaves no lock behind
    assert files.claim_folder(folder, "eval.py") == folder.resolve()  # this process may claim it again


def test_a_link_planted_at_a_folder_lock_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    lock = tmp_path / ".run.lock"
    lock.symlink_to(victim)
    with pytest.raises(
        FileExistsError, match=r"\.run\.lock is a link, not LL-Score's lock file; remove it"
    ) as refused:
        files.claim_folder(tmp_path / "run", "eval.py")
    assert "\n" not in str(refused.value)
    assert victim.read_text() == "not yours" and lock.is_symlink()


def test_a_full_disk_is_one_error_naming_the_file_and_keeps_every_old_file(tmp_path, monkeypatch):
    import errno

    old = {tmp_path / "metrics.json": b"old metrics", tmp_path / "report.md": b"old report"}
    for path, content in old.items():
        path.write_bytes(content)
    write_aside = files._write_aside

    def full_disk(path, data):
        if path.name == "report.md":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_aside(path, data)

    monkeypatch.setattr(files, "_write_aside", full_disk)
    with pytest.raises(files.NoSpaceError, match=r"report\.md: no space left on its device") as refused:
        files.write_all_atomic({path: b"new" for path in old})
    assert "\n" not in str(refused.value)
    assert {
        path: path.read_bytes() for path in old
    } == old  # metrics.json was written aside, never swapped in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.md"]
