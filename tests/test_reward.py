"""LLScoreReward: the scorer's own numbers, combined, deterministic, batched, and TRL-shaped."""

import numpy as np
import pytest
import torch

from llscore import LLScore, LLScoreReward


@pytest.fixture(scope="module")
def reward(llscore_checkpoints):
    return LLScoreReward.from_pretrained(
        llscore_checkpoints["qwen2_5_vl"], hallucination_weight=0.5, batch_size=2
    )


def test_reward_is_quality_minus_weighted_hallucination(reward, sample_images):
    restored, degraded = sample_images["restored"], sample_images["degraded"]
    values = reward(restored, degraded)
    assert values.shape == (5,) and values.dtype == torch.float32
    results = reward.scorer.score(restored, degraded, batch_size=5)
    np.testing.assert_allclose(values.numpy(), results.score - 0.5 * results.p_hallucination, atol=1e-5)
    torch.testing.assert_close(reward(restored, degraded), values)
    quality_only = LLScoreReward(reward.scorer, hallucination_weight=0.0)
    np.testing.assert_allclose(quality_only(restored, degraded).numpy(), results.score, atol=1e-5)


def test_grpo_adapter_has_trl_signature(reward, sample_images):
    reward_func = reward.grpo_reward_func()
    prompts = ["restore this image"] * 3
    out = reward_func(
        prompts=prompts, completions=sample_images["restored"][:3], degraded=sample_images["degraded"][:3]
    )
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(v, float) for v in out)
    np.testing.assert_allclose(
        out, reward(sample_images["restored"][:3], sample_images["degraded"][:3]).numpy(), atol=1e-5
    )
    assert reward_func.__name__ == "llscore_reward"


def test_reward_needs_matching_inputs(reward, sample_images):
    with pytest.raises(ValueError, match="5 restored images but 2 degraded inputs"):
        reward(sample_images["restored"], sample_images["degraded"][:2])
    assert isinstance(reward.scorer, LLScore)
