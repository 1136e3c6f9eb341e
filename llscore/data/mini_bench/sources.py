"""Real photographs that ship inside scikit-image, cut into many distinct source scenes.

Using real photographs (not synthetic patterns) keeps the statistics that restoration models and IQA metrics
rely on: natural edges, textures, noise-free smooth regions. They load from the installed package, offline.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from skimage import data

SCENES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle",
    "camera",
    "coins",
    "moon",
    "immunohistochemistry",
)
TEXTURES = ("brick", "grass", "gravel")


@functools.cache
def photo(name: str) -> np.ndarray:
    """The named scikit-image photograph as uint8 RGB (grey ones repeated on three channels)."""
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def random_crop(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A square crop at a random position and scale, randomly mirrored, resized to `size` (float RGB in [0, 1]).

    Crops never go below 30% of the short side (or `size` pixels), so each keeps recognisable content.
    """
    image = photo(name)
    height, width = image.shape[:2]
    short = min(height, width)
    side = rng.uniform(min(1.0, max(0.3, size / short)), 1.0) * short
    top = rng.uniform(0, height - side)
    left = rng.uniform(0, width - side)
    crop = Image.fromarray(image).resize(
        (size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side)
    )
    out = np.asarray(crop, dtype=np.float32) / 255.0
    return out[:, ::-1].copy() if rng.random() < 0.5 else out


def sample_scene(rng: np.random.Generator, size: int) -> tuple[str, np.ndarray]:
    """A random photograph and a random crop of it: one clean source scene."""
    name = SCENES[rng.integers(len(SCENES))]
    return name, random_crop(name, rng, size)
