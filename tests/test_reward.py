"""LLScoreReward: the scorer's own numbers, combined, deterministic and batched."""

import re

import numpy as np
import pytest
import torch
from conftest import FAMILIES

from llscore import LLScore, LLScoreReward
from llscore.errors import ImageError
from llscore.scoring import load_image


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


def test_reward_needs_matching_inputs(reward, sample_images):
    with pytest.raises(ValueError, match="5 restored images but 2 degraded inputs"):
        reward(sample_images["restored"], sample_images["degraded"][:2])
    assert isinstance(reward.scorer, LLScore)


def _eight_bit_batch(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    """n smooth random RGB images (so resizing rings), as a [0, 1] tensor and as PIL images of the same bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 3, size // 8, size // 8)).astype(np.float32)
    pixels = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(size, size), mode="nearest")
    pixels = pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    return tensor, [Image.fromarray(p) for p in pixels]


@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_images_reach_the_processor_unchanged_and_differentiable(llscore_checkpoints, family):
    """At a size the resolution rule keeps (no resize) a tensor gives exactly the PIL path's model inputs."""
    scorer = LLScore.from_pretrained(llscore_checkpoints[family])
    processor = scorer.processor.image_processor
    factor = processor.patch_size * processor.merge_size
    size = factor * int(scorer.config.resolution.max_pixels**0.5 // factor)  # a size the rule keeps as is
    restored, restored_pil = _eight_bit_batch(3, size, seed=1)
    degraded, degraded_pil = _eight_bit_batch(3, size, seed=2)
    restored.requires_grad_(True)
    from_tensors = scorer.backend.builder("quality", restored, degraded)
    from_pil = scorer.backend.builder("quality", restored_pil, degraded_pil)
    torch.testing.assert_close(from_tensors["pixel_values"], from_pil["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(from_tensors["input_ids"], from_pil["input_ids"])
    assert torch.equal(from_tensors["image_grid_thw"], from_pil["image_grid_thw"])
    from_tensors["pixel_values"].sum().backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0


def test_resized_tensor_images_stay_in_range_and_close_to_the_8_bit_path(reward):
    """128 px -> 112 px: the processor's float resize rings past [0, 255]; the tensor path clamps it."""
    builder = reward.scorer.backend.builder
    restored, restored_pil = _eight_bit_batch(2, 128, seed=5)
    from_tensors = builder("quality", restored)["pixel_values"]
    from_pil = builder("quality", restored_pil)["pixel_values"]
    processor = reward.scorer.processor.image_processor
    channel = torch.arange(from_tensors.shape[1]) // (from_tensors.shape[1] // 3)
    mean, std = torch.tensor(processor.image_mean)[channel], torch.tensor(processor.image_std)[channel]
    unnormalised = from_tensors * std + mean
    assert unnormalised.min() >= -1e-5 and unnormalised.max() <= 1 + 1e-5
    assert (from_tensors - from_pil).abs().mean() < 0.01


def test_differentiable_reward_matches_the_reward_and_leaves_the_scorer_frozen(reward):
    restored, restored_pil = _eight_bit_batch(4, 112, seed=3)
    degraded, degraded_pil = _eight_bit_batch(4, 112, seed=4)
    scorer = reward.scorer
    from_tensors = scorer.read(restored, degraded, hallucination=False)[0].level_logits
    torch.testing.assert_close(
        from_tensors,
        scorer.read(restored_pil, degraded_pil, hallucination=False)[0].level_logits,
        atol=1e-6,
        rtol=0,
    )
    swapped = scorer.read(degraded, restored, hallucination=False)[0].level_logits
    assert (swapped - from_tensors).abs().max() > 1e-4  # the tolerance above would catch a swapped pairing

    restored.requires_grad_(True)
    values = reward.differentiable(restored, degraded)
    np.testing.assert_allclose(
        values.detach().numpy(), reward(restored_pil, degraded_pil).numpy(), atol=1e-6, rtol=0
    )
    values.sum().backward()
    assert torch.isfinite(restored.grad).all() and restored.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in scorer.model.parameters())
    assert all(p.grad is None for p in scorer.model.parameters())


def test_a_single_tensor_is_one_image_and_bad_tensors_are_refused(reward):
    image, image_pil = _eight_bit_batch(1, 112, seed=6)
    np.testing.assert_allclose(reward(image[0]).numpy(), reward([image_pil[0]]).numpy(), atol=1e-6)
    with pytest.raises(ImageError, match=r"float \(3, H, W\)"):
        reward(torch.rand(2, 112, 112)[None])
    with pytest.raises(ImageError, match=r"must lie in \[0, 1\]"):
        reward(255 * torch.rand(1, 3, 112, 112))


def test_non_finite_pixels_are_refused_by_argument_and_index(reward):
    """NaN passes a [0, 1] range check made of comparisons and would make the reward NaN: the scorer's input
    check refuses it, for the reward's every path, naming the argument and the image."""
    restored, _ = _eight_bit_batch(3, 112, seed=7)
    degraded, _ = _eight_bit_batch(3, 112, seed=8)
    broken = restored.clone()
    broken[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"restored\[1\] has non-finite pixel values"):
        reward.differentiable(broken, degraded)
    with pytest.raises(ValueError, match=r"restored\[1\] has non-finite pixel values"):
        reward(list(broken), degraded)
    with pytest.raises(ValueError, match=r"restored\[1\] has non-finite pixel values"):
        reward.scorer.score(broken)
    degraded[2, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"degraded\[2\] has non-finite pixel values"):
        reward(restored, degraded)
    with pytest.raises(ImageError, match=r"must lie in \[0, 1\]"):
        load_image(broken[1])  # the range check itself refuses NaN too


@pytest.mark.parametrize(
    "weight, message",
    [
        (float("nan"), r"hallucination_weight must be a finite number >= 0, got nan"),
        (float("inf"), r"got inf"),
        ("0.5", r"got '0\.5'"),
        (True, r"got True"),
        (-1.0, r"got -1\.0; the reward is quality - hallucination_weight \* P\(hallucination\)"),
    ],
)
def test_the_hallucination_weight_is_a_finite_non_negative_number(reward, weight, message):
    """NaN made every reward NaN (blamed on the pixels), a string failed inside torch, and a negative weight would
    reward hallucinations: each is refused when the reward is made."""
    with pytest.raises(ValueError, match=message):
        LLScoreReward(reward.scorer, hallucination_weight=weight)
    assert LLScoreReward(reward.scorer, hallucination_weight=2).hallucination_weight == 2


def test_batches_of_different_sizes_and_empty_tensors_are_one_error(reward):
    with pytest.raises(ValueError, match=r"^2 restored images but 1 degraded inputs$"):
        reward.differentiable(torch.rand(2, 3, 112, 112), torch.rand(1, 3, 112, 112))
    for shape in ((3, 0, 112), (3, 112, 0)):
        with pytest.raises(
            ImageError, match=rf"a tensor image has no pixels \(shape {re.escape(str(shape))}\)"
        ):
            reward.scorer.score(torch.rand(*shape))
