"""Dead-leaves scenes: synthetic images with the statistics of natural photographs, and no photograph in them.

The dead-leaves model (occluding discs with power-law radii, as in the camera-texture charts of ISO 19567-2 and
IEEE P1858) reproduces what low-level vision depends on: scale-invariant edges, occlusions, flat regions and
a 1/f power spectrum. Some leaves carry a texture (gratings, filtered noise) and the whole scene a smooth
shading field, so that fine detail and tone vary as in photographs. The tiny base model's low-level
pretraining (docs/llbench_mini.md) runs on these scenes, so it never sees a scene of LL-Bench-mini.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A zero-mean texture in [-1, 1]: an oriented grating or band-limited noise."""
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size]
        angle, period = rng.uniform(0, np.pi), rng.uniform(2.5, 12)
        return np.sin(
            2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi)
        )
    noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), rng.uniform(0.6, 2.5))
    return noise / (np.abs(noise).max() + 1e-8)


def dead_leaves(rng: np.random.Generator, size: int, max_leaves: int = 4000) -> np.ndarray:
    """One dead-leaves scene: float RGB in [0, 1], shape (size, size, 3).

    Leaves are drawn front to back (each only paints pixels not yet covered) until the frame is covered, with
    radii r between 2.5 px and size / 2 following the scale-invariant density r^-3.
    """
    image = np.zeros((size, size, 3), dtype=np.float32)
    covered = np.zeros((size, size), dtype=bool)
    r_min, r_max = 2.5, size / 2
    palette = rng.uniform(0.1, 0.9, (6, 1)) + rng.normal(0, rng.uniform(0.03, 0.15), (6, 3))
    for _ in range(max_leaves):
        radius = (r_min**-2 - rng.random() * (r_min**-2 - r_max**-2)) ** -0.5
        cy, cx = rng.uniform(-radius, size + radius, 2)
        top, bottom = max(0, int(cy - radius)), min(size, int(cy + radius) + 1)
        left, right = max(0, int(cx - radius)), min(size, int(cx + radius) + 1)
        if top >= bottom or left >= right:
            continue
        yy, xx = np.mgrid[top:bottom, left:right]
        leaf = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius) & ~covered[top:bottom, left:right]
        if not leaf.any():
            continue
        colour = np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 0.06, 3), 0, 1)
        paint = np.broadcast_to(colour, (bottom - top, right - left, 3))
        if radius > 5 and rng.random() < 0.35:
            texture = _texture(rng, size)[top:bottom, left:right, None]
            paint = np.clip(paint + rng.uniform(0.05, 0.25) * texture, 0, 1)
        image[top:bottom, left:right][leaf] = paint[leaf]
        covered[top:bottom, left:right] |= leaf
        if covered.all():
            break
    shading = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 4)
    shading = 1 + rng.uniform(0, 0.4) * shading / (np.abs(shading).max() + 1e-8)
    image = ndimage.gaussian_filter(image * shading[..., None], (0.5, 0.5, 0))
    return np.clip(image, 0, 1).astype(np.float32)
