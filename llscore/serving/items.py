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

ACCEPTED_FORMATS = ("PNG", "JPEG", "MPO")
"""Encoded images a request may carry: lossless PNG, and the JPEG the frameworks' clients send (MPO is how
Pillow opens the JPEG files of many phone cameras)."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold: the body's bytes and each image's pixels (docs/serving.md)."""

    max_request_bytes: int = 64 << 20
    max_image_pixels: int = 4096 * 4096
    max_items: int = 256
    max_request_pixels: int = 64 * 1024 * 1024  # decoded, about 200 MB of RGB

    def budget(self) -> PixelBudget:
        return PixelBudget(self.max_request_pixels)


class PixelBudget:
    """The pixels one request may still decode: the per-image limit alone lets a body of many small,
    flat PNGs expand to gigabytes."""

    def __init__(self, pixels: int):
        self.left = pixels

    def spend(self, pixels: int, what: str) -> None:
        if pixels > self.left:
            raise ItemError(f"{what}: the request's images pass its limit of decoded pixels")
        self.left -= pixels


class ItemError(LLScoreError):
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


def decode_image(
    data: bytes, limits: Limits, what: str, budget: PixelBudget | None = None
) -> tuple[Image.Image, bool]:
    """PNG or JPEG bytes → (decoded image, was JPEG); ItemError naming `what` otherwise. The pixel limits (the
    image's, the request's `budget`) are checked from the header, before the pixels are decoded."""
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
    if budget is not None:
        budget.spend(image.width * image.height, what)
    try:
        image.load()
    except Exception as err:
        raise ItemError(f"{what}: the {image.format} data is cut short or corrupt ({err})") from None
    return image, image.format in ("JPEG", "MPO")


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

    def get(self, key, budget: PixelBudget | None = None) -> Image.Image:
        """The registered input named `key`; ItemError when none is."""
        if not isinstance(key, str) or len(key) > 512:
            raise ItemError(f"a degraded input's id must be a file name, got {type(key).__name__}")
        if not self.knows(key):
            raise ItemError(
                f"degraded input {key!r} is not registered (--degraded-dir holds {len(self)} inputs)"
            )
        data = self.paths[key.strip()].read_bytes()
        return decode_image(data, self.limits, f"degraded input {key!r}", budget)[0]


def item_from(
    restored: bytes, degraded: Image.Image | bytes | None, limits: Limits, where: str, budget: PixelBudget
) -> Item:
    """An Item from encoded restored bytes and a degraded input (a registered image, encoded bytes or None); a
    failure becomes the item's error, `where` naming the item in the request."""
    try:
        image, jpeg = decode_image(restored, limits, f"{where}: restored image", budget)
        if isinstance(degraded, bytes | bytearray):
            degraded, _ = decode_image(degraded, limits, f"{where}: degraded input", budget)
        elif degraded is not None and not isinstance(degraded, Image.Image):
            raise ItemError(
                f"{where}: a degraded input must be PNG or JPEG bytes, got {type(degraded).__name__}"
            )
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
    except Exception as err:  # one image the model refuses (or any failure) must not fail the batch
        if len(indices) == 1:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            readings[indices[0]].error = (
                message if isinstance(err, LLScoreError) else f"{type(err).__name__}: {message}"
            )
            logger.log(
                logging.INFO if isinstance(err, LLScoreError) else logging.ERROR,
                "item not scored: %s",
                message,
            )
            return
        for i in indices:
            _score_batch(reward, items, readings, [i])
        return
    rewards = reward.combine(torch.from_numpy(results.score), torch.from_numpy(results.p_hallucination))
    for k, i in enumerate(indices):
        readings[i].quality = float(results.score[k])
        readings[i].p_hallucination = float(results.p_hallucination[k])
        readings[i].reward = float(rewards[k])
