"""LL-Score in process, with the signatures image-RL frameworks call (docs/serving.md).

- Flow-GRPO (flow_grpo/rewards.py): a factory returning `_fn(images, prompts, metadata) -> (scores, info)`,
  images a float (N, 3, H, W) tensor in [0, 1] or a uint8 (N, H, W, 3) array.
- verl-omni (verl_omni/reward_loop/reward_manager/visual.py): `async compute_score(data_source, solution_image,
  ground_truth, extra_info, **kwargs) -> {"score": ...}`, the image a uint8 (3, H, W) tensor.

Both quantise to 8 bits as the frameworks' own remote clients do before encoding, then score through
`score_items`, the service's path: in process and over HTTP, an image gets the same reading.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llscore.reward import LLScoreReward
from llscore.serving.items import DegradedInputs, Item, ItemError, score_items


def _uint8_images(images) -> list[Image.Image]:
    """Flow-GRPO's two image forms → 8-bit RGB PIL images (its own rounding: flow_grpo/rewards.py)."""
    if isinstance(images, torch.Tensor):
        images = (images * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy().transpose(0, 2, 3, 1)
    return [Image.fromarray(np.ascontiguousarray(image)) for image in np.asarray(images)]


def _degraded(source, registered: DegradedInputs, named: bool):
    """A degraded input given as an image, a tensor, a path, or the id of a registered one; None for none.
    A source the caller `named` as the degraded input must be found (as the service answers); a prompt that
    is neither an id nor a file is no degraded input."""
    if source is None or isinstance(source, Image.Image):
        return source
    if isinstance(source, torch.Tensor):
        return _uint8_images(source[None] if source.dtype.is_floating_point else source[None].float() / 255)[
            0
        ]
    if registered.knows(source):
        return registered.get(source)
    if isinstance(source, str | Path) and Path(source).is_file():
        return Image.open(source)
    if named:
        raise ItemError(f"degraded input {source!r} is neither a registered id nor a file")
    return None


def _item(image: Image.Image, source, registered: DegradedInputs, named: bool) -> Item:
    try:
        return Item(image, _degraded(source, registered, named))
    except ItemError as err:
        return Item(error=str(err))


def flow_grpo_reward(
    ckpt: str | LLScoreReward,
    hallucination_weight: float = 1.0,
    degraded_dir: str | None = None,
    batch_size: int = 8,
    **load_kwargs,
):
    """Flow-GRPO's reward shape: `_fn(images, prompts, metadata) -> (rewards, info)`. An image's degraded input
    is `metadata[i]["degraded"]` (an image or a path), or the registered id in `metadata[i]["degraded_id"]` or
    in its prompt. `info` holds quality, P(hallucination) and each item's error (NaN reward)."""
    reward = (
        ckpt
        if isinstance(ckpt, LLScoreReward)
        else LLScoreReward.from_pretrained(ckpt, hallucination_weight, **load_kwargs)
    )
    registered = DegradedInputs(degraded_dir)

    def _fn(images, prompts, metadata):
        restored = _uint8_images(images)
        prompts = list(prompts) if prompts is not None else [None] * len(restored)
        metadata = list(metadata) if metadata is not None else [{}] * len(restored)
        items = []
        for image, prompt, meta in zip(restored, prompts, metadata, strict=True):
            meta = meta if isinstance(meta, dict) else {}
            named = meta.get("degraded", meta.get("degraded_id"))
            items.append(_item(image, prompt if named is None else named, registered, named is not None))
        readings = score_items(reward, items, batch_size)
        info = {
            "quality": np.array([r.quality for r in readings]),
            "p_hallucination": np.array([r.p_hallucination for r in readings]),
            "errors": [r.error for r in readings],
        }
        return np.array([r.reward for r in readings]), info

    return _fn


_loading = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached_reward(ckpt: str, hallucination_weight: float, dtype: str, device: str | None) -> LLScoreReward:
    return LLScoreReward.from_pretrained(ckpt, hallucination_weight, dtype=dtype, device=device)


def _loaded_reward(*key) -> LLScoreReward:
    with _loading:
        return _cached_reward(*key)


@functools.lru_cache(maxsize=4)
def _cached_inputs(degraded_dir: str | None) -> DegradedInputs:
    return DegradedInputs(degraded_dir)


async def compute_score(
    data_source=None,
    solution_image: torch.Tensor | None = None,
    ground_truth=None,
    extra_info: dict | None = None,
    *,
    ckpt: str,
    hallucination_weight: float = 1.0,
    dtype: str = "float32",
    device: str | None = None,
    degraded_dir: str | None = None,
    **kwargs,
) -> dict:
    """verl-omni's reward rule. `ckpt` (and the other keywords) come from the reward's config kwargs; the
    degraded input is `extra_info["degraded"]` (an image, a path or a registered id), else `ground_truth` when
    it names a registered id or a file. A video (T, 3, H, W) is scored on its first frame."""
    # off verl-omni's event loop; concurrent first calls wait in their threads for the one load
    reward = await asyncio.to_thread(_loaded_reward, ckpt, float(hallucination_weight), dtype, device)
    image = solution_image[0] if solution_image.ndim == 4 else solution_image
    restored = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    registered = _cached_inputs(degraded_dir)
    extra_info = extra_info or {}
    named = extra_info.get("degraded")
    item = _item(restored, ground_truth if named is None else named, registered, named is not None)
    (reading,) = await asyncio.to_thread(score_items, reward, [item], 1)
    return {
        "score": reading.reward,
        "quality": reading.quality,
        "p_hallucination": reading.p_hallucination,
        "error": reading.error or "",
    }
