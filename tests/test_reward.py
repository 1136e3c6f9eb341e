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


def _eight_bit_batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    """n random RGB images, as a [0, 1] tensor and as the PIL images holding the same 8-bit values."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    return tensor, [Image.fromarray(p) for p in pixels]


def test_tensor_images_reach_the_processor_unchanged_and_differentiable(reward):
    """At the resolution rule's own size (112 px: no resize) a tensor gives the PIL path's pixel_values."""
    builder = reward.scorer.builder
    restored, restored_pil = _eight_bit_batch(3, 112, seed=1)
    degraded, degraded_pil = _eight_bit_batch(3, 112, seed=2)
    restored.requires_grad_(True)
    from_tensors = builder("quality", restored, degraded)
    from_pil = builder("quality", restored_pil, degraded_pil)
    torch.testing.assert_close(from_tensors["pixel_values"], from_pil["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(from_tensors["input_ids"], from_pil["input_ids"])
    from_tensors["pixel_values"].sum().backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0


def test_differentiable_reward_matches_the_reward_and_leaves_the_scorer_frozen(reward):
    restored, restored_pil = _eight_bit_batch(4, 112, seed=3)
    degraded, degraded_pil = _eight_bit_batch(4, 112, seed=4)
    restored.requires_grad_(True)
    values = reward.differentiable(restored, degraded)
    np.testing.assert_allclose(
        values.detach().numpy(), reward(restored_pil, degraded_pil).numpy(), atol=1e-4, rtol=0
    )
    values.sum().backward()
    assert torch.isfinite(restored.grad).all() and restored.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in reward.scorer.model.parameters())
    assert all(p.grad is None for p in reward.scorer.model.parameters())


def test_a_badly_shaped_tensor_is_refused(reward):
    from llscore.scoring import ImageError

    with pytest.raises(ImageError, match=r"float \(3, H, W\)"):
        reward(torch.rand(2, 112, 112))
