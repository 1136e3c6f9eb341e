"""The suite's own rules (README.md, "Tests"): a test that reads ../shared fails in CI where it is absent and skips
with the reason elsewhere; CI sets CI and records the slowest tests; the fast lane leaves out the `slow` marker."""

import pytest
from conftest import in_ci, shared_or_skip
from scripts import REPO


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("", False), ("0", False), ("false", False), (None, False)],
)
def test_ci_is_told_by_the_ci_variable(value, expected, monkeypatch):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_absent_shared_files_fail_in_ci_and_skip_elsewhere(tmp_path, monkeypatch):
    missing = tmp_path / "shared" / "fixtures" / "qwen2_5_vl_processor"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        shared_or_skip(missing)
    assert f"{missing} is absent" in str(failed.value) and "put ../shared beside the checkout" in str(
        failed.value
    )
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception) as skipped:
        shared_or_skip(missing)
    assert f"{missing} is absent: ../shared" in str(skipped.value)
    assert "CI runs every test" not in str(skipped.value)
    missing.mkdir(parents=True)
    monkeypatch.setenv("CI", "true")
    assert shared_or_skip(missing) == missing  # present: used, in CI or not


def test_ci_says_it_is_ci():
    """.ci/run declares CI, so that a test whose ../shared fixture is absent fails there."""
    assert "\nexport CI=true\n" in (REPO / ".ci" / "run").read_text()


def test_ci_runs_everything_and_records_the_slowest_tests():
    """.ci/run runs the README's test command with no marker deselected, and prints the slowest tests; the README
    names both lanes."""
    ci = (REPO / ".ci" / "run").read_text()
    (command,) = [line for line in ci.splitlines() if line.startswith("python -m pytest")]
    words = command.split()
    assert words[:3] == ["python", "-m", "pytest"] and "--durations=25" in words and "-m" not in words[3:]
    readme = (REPO / "README.md").read_text()
    assert 'python -m pytest -q -m "not slow"' in readme and "python -m pytest -q " in readme
