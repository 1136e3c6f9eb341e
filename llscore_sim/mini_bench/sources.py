"""Real photographs that ship inside installed packages, cut into many distinct source crops.

Using real photographs (not synthetic patterns) keeps the statistics that restoration models and IQA metrics
rely on: natural edges, textures, noise-free smooth regions. They load from scikit-image, scikit-learn and
matplotlib, offline. Every crop records its photograph (its scene), so that splits can keep a scene in one
split: crops of one photograph share content, and a test crop of a training photograph is not held out.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image


def _skimage(name: str):
    from skimage import data

    return lambda: getattr(data, name)()


def _sklearn(name: str):
    def load():
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib(name: str):
    def load():
        from matplotlib import cbook

        with cbook.get_sample_data(name) as file:
            return np.asarray(Image.open(file).convert("RGB"))

    return load


def _motorcycle():
    from skimage import data

    return data.stereo_motorcycle()[0]


PHOTOGRAPHS = {
    "astronaut": _skimage("astronaut"),
    "camera": _skimage("camera"),
    "cell": _skimage("cell"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "coins": _skimage("coins"),
    "moon": _skimage("moon"),
    "rocket": _skimage("rocket"),
    "motorcycle": _motorcycle,
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "page": _skimage("page"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
}
"""Scene name -> loader of a photograph (uint8, grey or RGB) from an installed package."""
SCENES = tuple(PHOTOGRAPHS)


@functools.cache
def photo(name: str) -> np.ndarray:
    """The named photograph as uint8 RGB (grey ones repeated on three channels)."""
    image = np.asarray(PHOTOGRAPHS[name]())
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
    """A random photograph and a random crop of it: one clean source."""
    name = SCENES[rng.integers(len(SCENES))]
    return name, random_crop(name, rng, size)
