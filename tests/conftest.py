"""Shared, session-scoped fixtures: one small LL-Bench-mini and one tiny checkpoint per Qwen-VL family."""

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"
CALIBRATION = SHARED / "calibration" / "pyiqa"
FAMILIES = (
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
)  # every entry of llscore/families.py (tests/test_families.py)


def in_ci() -> bool:
    """Whether the suite runs in CI: `CI` is set to something other than empty, 0, false or no, as .ci/run does
    (`CI=true`, the convention hosted CI services follow too)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_or_skip(path: Path) -> Path:
    """`path` under ../shared (README.md, "Tests"). Where it is absent the test fails in CI, which must test
    against these files, and skips with the reason elsewhere (a checkout without ../shared beside it)."""
    if not path.exists():
        reason = f"{path} is absent: ../shared (the fixtures tests read) is not beside this checkout"
        if in_ci():
            pytest.fail(f"{reason}; CI runs every test, so put ../shared beside the checkout", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def mini_bench(tmp_path_factory) -> Path:
    """A 16-source LL-Bench-mini (one source per task), generated once per test session."""
    from llscore_sim.mini_bench import make_mini_bench

    return make_mini_bench(tmp_path_factory.mktemp("bench") / "llbench_mini", seed=0, n_sources=16)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints of each family with the locally trained tokenizer."""
    from llscore_sim.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_checkpoint(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def llscore_checkpoints(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoints made into (untrained) LL-Score checkpoints: weights + the default prompt contract."""
    import shutil

    from llscore.modeling import write_llscore_config
    from llscore.prompts import LLScoreConfig, ResolutionRule

    root = tmp_path_factory.mktemp("llscore")
    out = {}
    for family, path in tiny_checkpoints.items():
        out[family] = Path(shutil.copytree(path, root / family))
        write_llscore_config(
            LLScoreConfig(resolution=ResolutionRule(3136, 12544), base_model=str(path)), out[family]
        )
    return out


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> dict[str, list[Path]]:
    """Five degraded/restored PNG pairs of different sizes, named alike so the CLI can pair them."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = {"restored": [], "degraded": []}
    for kind in out:
        (root / kind).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 256, (64 + 8 * i, 72, 3), dtype=np.uint8)
            out[kind].append(root / kind / f"img_{i}.png")
            Image.fromarray(pixels).save(out[kind][-1])
    return out
