"""llscore.errors: one line per expected failure, the traceback only when asked for."""

import pytest

from llscore.errors import fail


def test_fail_prints_one_line_and_reraises_only_when_debugging(capsys, monkeypatch):
    err = ValueError("first line\n  second line\n")
    monkeypatch.delenv("LLSCORE_DEBUG", raising=False)
    assert fail("tool", err) == 2
    assert capsys.readouterr().err == "tool: error: first line; second line\n"
    for off in ("0", "false", "no"):
        monkeypatch.setenv("LLSCORE_DEBUG", off)
        assert fail("tool", err) == 2
    monkeypatch.setenv("LLSCORE_DEBUG", "1")
    with pytest.raises(ValueError, match="first line"):
        fail("tool", err)
    monkeypatch.delenv("LLSCORE_DEBUG")
    with pytest.raises(ValueError):
        fail("tool", err, debug=True)
