"""What every wire protocol reduces to: items (a restored image, its degraded input when known) and their
readings (quality, P(hallucination), reward), scored by the one scoring path (docs/serving.md).

A bad item never fails the others: it reads NaN with its error in one line.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from llscore.errors import LLScoreError
from llscore.reward import LLScoreReward

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG")
"""Encoded images a request may carry: lossless PNG, and the JPEG the frameworks' clients send."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold: the body's bytes and each image's pixels (docs/serving.md)."""

    max_request_bytes: int = 64 << 20
    max_image_pixels: int = 4096 * 4096


class ItemError(ValueError):
    """One item that cannot be scored; its message is the item's one-line error."""


@dataclass
class Item:
    """One image to score. `restored` is None when it could not be decoded (`error` says why)."""

    restored: Image.Image | None = None
    degraded: Image.Image | None = None
    jpeg: bool = False  # the restored image arrived JPEG-compressed: the evaluator sees its artefacts
    error: str | None = None


@dataclass
class Reading:
    """An item's answer: NaN and the error for an item that could not be scored."""

    quality: float = math.nan
    p_hallucination: float = math.nan
    reward: float = math.nan
    jpeg: bool = False
    error: str | None = None

    def to_json(self) -> dict:
        """JSON has no NaN: an unscored value is null (as UniRL's service writes it)."""

        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "quality": finite(self.quality),
            "p_hallucination": finite(self.p_hallucination),
            "reward": finite(self.reward),
            "jpeg": self.jpeg,
            "error": self.error,
        }


def decode_image(data: bytes, limits: Limits, what: str) -> tuple[Image.Image, bool]:
    """PNG or JPEG bytes → (8-bit RGB image, was JPEG); ItemError naming `what` otherwise. The pixel limit is
    checked from the header, before the pixels are decoded."""
    if not isinstance(data, bytes | bytearray):
        raise ItemError(f"{what}: expected encoded image bytes, got {type(data).__name__}")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:
        raise ItemError(f"{what}: not a PNG or JPEG image ({len(data)} bytes)") from None
    if image.format not in ACCEPTED_FORMATS:
        raise ItemError(f"{what}: {image.format} is not accepted; send PNG or JPEG")
    if image.width * image.height > limits.max_image_pixels:
        raise ItemError(
            f"{what}: {image.width}x{image.height} is over the limit of {limits.max_image_pixels:,} pixels"
        )
    try:
        image.load()
    except Exception as err:
        raise ItemError(f"{what}: the {image.format} data is cut short or corrupt ({err})") from None
    return image, image.format == "JPEG"


def decode_base64(text, what: str) -> bytes:
    """Base64 text (standard alphabet, padding optional) → bytes; ItemError naming `what` otherwise."""
    if not isinstance(text, str):
        raise ItemError(f"{what}: expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ItemError(f"{what}: not valid base64") from None


class DegradedInputs:
    """The degraded inputs registered at start (`llscore serve --degraded-dir`), found by file name or stem,
    so that a request names its input instead of sending it (verl-omni sends only a prompt string)."""

    def __init__(self, folder: str | Path | None = None, limits: Limits = Limits()):
        self.limits = limits
        self.paths: dict[str, Path] = {}
        if folder is None:
            return
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"--degraded-dir {folder}: no such folder")
        for path in sorted(folder.iterdir()):
            if (
                path.is_file()
                and not path.name.startswith(".")
                and path.suffix.lower() in {".png", ".jpg", ".jpeg"}
            ):
                for key in (path.name, path.stem):
                    if key in self.paths and self.paths[key] != path:
                        raise FileExistsError(
                            f"--degraded-dir {folder}: {key} names both {self.paths[key].name} and {path.name}"
                        )
                    self.paths[key] = path
        logger.info("registered %d degraded inputs from %s", len(set(self.paths.values())), folder)

    def __len__(self) -> int:
        return len(set(self.paths.values()))

    def knows(self, key) -> bool:
        return isinstance(key, str) and key.strip() in self.paths

    def get(self, key: str) -> Image.Image:
        """The registered input named `key`; ItemError when none is."""
        if not self.knows(key):
            raise ItemError(
                f"degraded input {key!r} is not registered (--degraded-dir holds {len(self)} inputs)"
            )
        image, _ = decode_image(self.paths[key.strip()].read_bytes(), self.limits, f"degraded input {key!r}")
        return image


def item_from(restored: bytes, degraded: Image.Image | bytes | None, limits: Limits, where: str) -> Item:
    """An Item from encoded restored bytes and a degraded input (an image, encoded bytes or None); a failure
    becomes the item's error, `where` naming the item in the request."""
    try:
        image, jpeg = decode_image(restored, limits, f"{where}: restored image")
        if isinstance(degraded, bytes | bytearray):
            degraded, _ = decode_image(degraded, limits, f"{where}: degraded input")
        return Item(image, degraded, jpeg)
    except ItemError as err:
        return Item(error=str(err))


def score_items(reward: LLScoreReward, items: list[Item], batch_size: int = 8) -> list[Reading]:
    """The readings of `items` in order, by `LLScore.score` (the same path as eval.py and the reward). Items
    with and without a degraded input are scored apart (a batch is one or the other); a batch that fails is
    scored item by item, so one bad image costs only its own reading."""
    readings = [Reading(jpeg=item.jpeg, error=item.error) for item in items]
    for with_input in (True, False):
        group = [
            i
            for i, item in enumerate(items)
            if item.error is None and (item.degraded is not None) == with_input
        ]
        for start in range(0, len(group), batch_size):
            _score_batch(reward, items, readings, group[start : start + batch_size])
    return readings


def _score_batch(
    reward: LLScoreReward, items: list[Item], readings: list[Reading], indices: list[int]
) -> None:
    if not indices:
        return
    restored = [items[i].restored for i in indices]
    degraded = [items[i].degraded for i in indices] if items[indices[0]].degraded is not None else None
    try:
        results = reward.scorer.score(restored, degraded, batch_size=len(indices), hallucination=True)
    except LLScoreError as err:
        if len(indices) == 1:
            readings[indices[0]].error = str(err).splitlines()[0]
            return
        for i in indices:
            _score_batch(reward, items, readings, [i])
        return
    rewards = reward.combine(torch.from_numpy(results.score), torch.from_numpy(results.p_hallucination))
    for k, i in enumerate(indices):
        readings[i].quality = float(results.score[k])
        readings[i].p_hallucination = float(results.p_hallucination[k])
        readings[i].reward = float(rewards[k])
