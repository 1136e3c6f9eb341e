"""Zero-shot scoring of a base model that has no llscore_config.json: the default contract, with a warning."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from llscore import LLScore
from llscore.cli import main as cli_main
from llscore.errors import CheckpointError
from llscore.modeling import ZeroShotWarning, write_llscore_config
from llscore.prompts import LLScoreConfig


def test_a_bare_base_needs_the_flag_and_the_error_names_it(tiny_checkpoints):
    with pytest.raises(CheckpointError, match=r"no llscore_config\.json") as error:
        LLScore.from_pretrained(tiny_checkpoints["qwen2_vl"])
    assert "zero_shot=True" in str(error.value) and "--zero-shot" in str(error.value)


def test_zero_shot_scores_with_exactly_the_default_contract(tiny_checkpoints, sample_images, tmp_path):
    base = tiny_checkpoints["qwen2_5_vl"]
    with pytest.warns(ZeroShotWarning, match="zero-shot with the default prompt contract"):
        zero_shot = LLScore.from_pretrained(base, zero_shot=True)
    assert zero_shot.config == LLScoreConfig(base_model=str(base))
    explicit_dir = shutil.copytree(base, tmp_path / "explicit")
    write_llscore_config(LLScoreConfig(base_model=str(base)), explicit_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroShotWarning)  # a checkpoint with a contract loads silently
        explicit = LLScore.from_pretrained(explicit_dir)
    restored, degraded = sample_images["restored"], sample_images["degraded"]
    a, b = zero_shot.score(restored, degraded), explicit.score(restored, degraded)
    assert np.isfinite(a.score).all() and np.ptp(a.score) > 0
    np.testing.assert_allclose(a.score, b.score, atol=1e-6)
    np.testing.assert_allclose(a.p_hallucination, b.p_hallucination, atol=1e-6)


def test_zero_shot_flag_keeps_a_checkpoints_own_contract(llscore_checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroShotWarning)
        scorer = LLScore.from_pretrained(llscore_checkpoints["qwen2_vl"], zero_shot=True)
    assert scorer.config.resolution.max_pixels == 12544  # the fixture's rule, not the default 256 * 28 * 28


def test_cli_zero_shot(tiny_checkpoints, sample_images, tmp_path, capsys):
    args = [
        "score",
        "--ckpt",
        str(tiny_checkpoints["qwen2_vl"]),
        "--restored",
        str(sample_images["restored"][0].parent),
        "--degraded",
        str(sample_images["degraded"][0].parent),
    ]
    refused = tmp_path / "refused.csv"
    assert cli_main([*args, "--out", str(refused)]) != 0
    assert "--zero-shot" in capsys.readouterr().err and not refused.exists()
    out = tmp_path / "s.csv"
    with pytest.warns(ZeroShotWarning):
        assert cli_main([*args, "--zero-shot", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == len(sample_images["restored"]) and frame["score"].between(1, 5).all()
