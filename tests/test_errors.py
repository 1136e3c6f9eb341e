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


def test_every_expected_failure_of_the_library_is_one_llscore_error():
    """One hierarchy (llscore/errors.py): an entry point that catches `LLScoreError` catches every error the
    library raises on purpose. A new error class elsewhere must derive from one of them."""
    import ast
    import importlib
    from pathlib import Path

    from llscore.errors import LLScoreError

    library = Path(__file__).resolve().parents[1] / "llscore"
    defined = {}
    for path in library.rglob("*.py"):
        module = ".".join(path.relative_to(library.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined[node.name] = getattr(importlib.import_module(module), node.name)
    assert {"ConfigError", "DataError", "ImageError", "CheckpointError", "HubError", "ColumnMapError"} <= set(
        defined
    )
    assert [name for name, error in defined.items() if not issubclass(error, LLScoreError)] == []


def test_a_process_without_peers_never_hides_an_error_as_a_peer_failure():
    """`fail_after_peer` stays quiet only inside a process group of two or more; alone, the error is raised."""
    from llscore.errors import fail_after_peer

    for err in (RuntimeError("gloo: Connection closed by peer [127.0.0.1]:1"), KeyError("x")):
        with pytest.raises(type(err)):
            fail_after_peer(err)
