"""Simulated restoration models of both families, their failure modes, and an output's fidelity to the clean scene.

We know the clean scene, so a "model" is a recipe of what real ones get wrong (docs/llbench_mini.md maps them to
LL-Bench's restorers): conventional regressors leave residual degradation, over-smooth, or over-sharpen with
ringing halos; large generative models (LGMs, here instruction-following image editors as in LL-Bench) return
clean-looking images with re-rendered texture, global tone and colour changes, and sometimes hallucinate: they
replace a texture, invent, remove or reshape an object (identity drift), or write text that is not there. What
the simulated people think of an output is `perception`'s business and never sees the clean scene;
`clean_fidelity` is what only the simulation can measure, kept for reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage import draw
from skimage.metrics import structural_similarity

from .degradations import blur, luminance, quantise

HALLUCINATIONS = (
    "replaced_texture",
    "invented_structure",
    "removed_structure",
    "changed_structure",
    "added_text",
)


@dataclass(frozen=True)
class Model:
    """The failure profile of one simulated restoration model."""

    name: str
    family: str
    residual: float  # mean fraction of the degradation left in the output
    smooth: float = 0.0  # Gaussian sigma of over-smoothing (pixels)
    sharpen: float = 0.0  # unsharp-mask gain: over-sharpening with ringing halos
    colour: float = 0.0  # std of the per-channel colour gain drift
    tone: float = 0.0  # std of a global tone change (log gamma and saturation), as editors re-render an image
    texture: float = 0.0  # amplitude of generated fine texture
    hallucination: float = 0.0  # probability of hallucinating on one image
    specialities: tuple[str, ...] = ()  # tasks it was trained for: far less residual


_CONV, _LGM = "conventional", "lgm"
MODELS = (
    Model(
        "conv_dncnn_like", _CONV, 0.6, smooth=0.9, colour=0.01, specialities=("noise", "low_light", "jpeg")
    ),
    Model(
        "conv_swinir_like",
        _CONV,
        0.45,
        smooth=0.5,
        sharpen=0.3,
        colour=0.01,
        specialities=("low_resolution", "jpeg", "noise", "defocus_blur"),
    ),
    Model(
        "conv_restormer_like",
        _CONV,
        0.45,
        smooth=0.3,
        sharpen=0.9,
        colour=0.015,
        hallucination=0.03,
        specialities=("motion_blur", "defocus_blur", "rain", "haze", "flare"),
    ),
    Model(
        "conv_mprnet_like",
        _CONV,
        0.5,
        smooth=1.4,
        colour=0.01,
        hallucination=0.05,
        specialities=("rain", "raindrop", "snow", "motion_blur", "reflection"),
    ),
    Model(
        "conv_retinex_like",
        _CONV,
        0.55,
        smooth=0.3,
        sharpen=0.5,
        colour=0.06,
        specialities=("low_light", "hdr", "shadow", "underwater", "haze"),
    ),
    Model(
        "lgm_qwen_image_edit_like",
        _LGM,
        0.08,
        sharpen=0.4,
        colour=0.02,
        tone=0.05,
        texture=0.03,
        hallucination=0.3,
    ),
    Model(
        "lgm_flux_edit_like",
        _LGM,
        0.1,
        smooth=0.4,
        sharpen=0.2,
        colour=0.03,
        tone=0.08,
        texture=0.025,
        hallucination=0.35,
    ),
    Model("lgm_step1x_edit_like", _LGM, 0.15, sharpen=0.6, colour=0.025, texture=0.04, hallucination=0.3),
    Model("lgm_bagel_like", _LGM, 0.12, colour=0.08, tone=0.12, texture=0.02, hallucination=0.45),
    Model(
        "lgm_gpt_image_like", _LGM, 0.03, smooth=0.2, colour=0.04, tone=0.06, texture=0.015, hallucination=0.5
    ),
)


@dataclass(frozen=True)
class Restoration:
    image: np.ndarray  # float RGB in [0, 1] at 8-bit levels
    hallucination: str  # one of HALLUCINATIONS, or "" when faithful
    mask: np.ndarray  # bool: pixels whose content is not supported by the input


def _blob(rng: np.random.Generator, size: int, area: float, centre=None) -> np.ndarray:
    """A soft-edged random ellipse covering about `area` of the frame (alpha in [0, 1])."""
    aspect = rng.uniform(0.6, 1.6)
    radius = np.sqrt(area * size * size / np.pi)
    ry, rx = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    if centre is None:
        centre = rng.uniform(0.25 * size, 0.75 * size, 2)
    mask = np.zeros((size, size), dtype=np.float32)
    rr, cc = draw.ellipse(centre[0], centre[1], ry, rx, shape=mask.shape, rotation=rng.uniform(0, np.pi))
    mask[rr, cc] = 1.0
    return ndimage.gaussian_filter(mask, 1.5)


Donor = Callable[[np.random.Generator, int], np.ndarray]
"""(rng, size) -> a float RGB image of other content of the same kind (the bench: another crop of the source's
own photograph, so that no other scene's content enters it)."""


def _replace_texture(image, rng, donor: Donor):
    """Paste other content, colour-matched to the region so it blends in as plausible content."""
    size = image.shape[0]
    donor = donor(rng, size)
    alpha = _blob(rng, size, rng.uniform(0.08, 0.22))
    inside = alpha > 0.5
    mean, std = image[inside].mean(0), image[inside].std(0) + 0.02
    matched = (donor - donor[inside].mean(0)) / (donor[inside].std(0) + 1e-3) * std + mean
    return image * (1 - alpha[..., None]) + matched * alpha[..., None], inside


def _invent_structure(image, rng, donor: Donor):
    """Draw crisp objects that are not in the scene: lines, rings and polygons in the scene's own colours."""
    size = image.shape[0]
    centre = rng.uniform(0.2 * size, 0.8 * size, 2)
    spread = rng.uniform(0.1, 0.2) * size
    alpha = np.zeros((size, size), dtype=np.float32)
    paint = np.zeros_like(image)
    local = image[int(centre[0]), int(centre[1])]
    for _ in range(rng.integers(2, 5)):
        palette = image[rng.integers(size, size=8), rng.integers(size, size=8)]
        colour = palette[np.argmax(np.abs(luminance(palette) - luminance(local)))]
        y, x = centre + rng.normal(0, spread, 2)
        layer = np.zeros_like(alpha)
        shape = rng.integers(3)
        if shape == 0:
            y1, x1 = np.array([y, x]) + rng.normal(0, 1.5 * spread, 2)
            rr, cc = draw.line_nd((y, x), (y1, x1), endpoint=True)
            layer[np.clip(rr, 0, size - 1), np.clip(cc, 0, size - 1)] = 1.0
            layer = ndimage.maximum_filter(layer, rng.integers(1, 4))
        elif shape == 1:
            radius = int(rng.uniform(3, spread))
            rr, cc, val = draw.circle_perimeter_aa(int(y), int(x), radius, shape=alpha.shape)
            layer[rr, cc] = val
            layer = ndimage.maximum_filter(layer, 2)
        else:
            corners = np.array([y, x]) + rng.normal(0, 0.6 * spread, (rng.integers(3, 6), 2))
            rr, cc = draw.polygon(corners[:, 0], corners[:, 1], shape=alpha.shape)
            layer[rr, cc] = 1.0
        paint = paint * (1 - layer[..., None]) + colour * layer[..., None]
        alpha = np.maximum(alpha, layer)
    alpha = ndimage.gaussian_filter(alpha, 0.6)
    out = image * (1 - alpha[..., None]) + ndimage.gaussian_filter(paint, (0.6, 0.6, 0)) * alpha[..., None]
    return out, ndimage.binary_dilation(alpha > 0.3, iterations=2)


def _remove_structure(image, rng, donor: Donor):
    """Inpaint away the most detailed part of the scene with smooth, plausible-looking content."""
    size = image.shape[0]
    detail = ndimage.gaussian_filter(ndimage.gaussian_gradient_magnitude(luminance(image), 1.0), size / 16)
    candidates = np.argsort(detail.ravel())[-size:]
    centre = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], detail.shape), float)
    alpha = _blob(rng, size, rng.uniform(0.06, 0.16), centre)[..., None]
    keep = 1.0 - (alpha > 0.05)
    fill = blur(image * keep, 7.0) / np.maximum(blur(keep, 7.0), 1e-3)
    return image * (1 - alpha) + fill * alpha, alpha[..., 0] > 0.5


def _change_structure(image, rng, donor: Donor):
    """Reshape an object (identity drift): a smooth local warp of a few pixels over the most detailed region, so
    shapes bend and move while their texture and colour look right."""
    size = image.shape[0]
    detail = ndimage.gaussian_filter(ndimage.gaussian_gradient_magnitude(luminance(image), 1.0), size / 16)
    candidates = np.argsort(detail.ravel())[-size:]
    centre = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], detail.shape), float)
    alpha = _blob(rng, size, rng.uniform(0.06, 0.16), centre)
    shift = [ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 12) for _ in range(2)]
    amplitude = rng.uniform(2.0, 5.0) / max(np.abs(shift).max(), 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    coords = [yy + amplitude * shift[0] * alpha, xx + amplitude * shift[1] * alpha]
    warped = np.stack(
        [ndimage.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], axis=-1
    )
    return warped, alpha > 0.5


def _add_text(image, rng, donor: Donor):
    """Write a short line of text that the scene does not hold (editors often add signs and captions)."""
    size = image.shape[0]
    letters = "".join(rng.choice(list("ABCDEFGHKLMNOPRSTUWXYZ0123456789"), rng.integers(4, 9)))
    layer = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(layer)
    left, top, right, bottom = pen.textbbox((0, 0), letters, font=ImageFont.load_default())
    x = rng.uniform(0, max(1.0, size - (right - left)))
    y = rng.uniform(0, max(1.0, size - (bottom - top)))
    pen.text((x, y), letters, fill=255, font=ImageFont.load_default())
    alpha = np.asarray(layer, dtype=np.float32) / 255.0
    region = ndimage.binary_dilation(alpha > 0.3, iterations=2)
    local = image[region].mean(0)
    ink = np.where(luminance(local) > 0.5, 0.05, 0.95) * np.ones(3, dtype=np.float32)
    return image * (1 - alpha[..., None]) + ink * alpha[..., None], region


_HALLUCINATE = {
    "replaced_texture": _replace_texture,
    "invented_structure": _invent_structure,
    "removed_structure": _remove_structure,
    "changed_structure": _change_structure,
    "added_text": _add_text,
}


def restore(
    model: Model,
    clean: np.ndarray,
    degraded: np.ndarray,
    task: str,
    donor: Donor,
    rng: np.random.Generator,
) -> Restoration:
    """Simulate `model` restoring `degraded`: a partial return towards the clean scene, then the model's flaws."""
    size = clean.shape[0]
    residual = model.residual * (0.3 if task in model.specialities else 1.0) * rng.lognormal(0.0, 0.3)
    out = clean + min(residual, 1.0) * (degraded - clean)
    if model.smooth:
        out = blur(out, model.smooth * rng.uniform(0.6, 1.4))
    if model.sharpen:
        out = out + model.sharpen * rng.uniform(0.6, 1.4) * (out - blur(out, 1.5))
    if model.colour:
        out = out * (1 + rng.normal(0, model.colour, 3)) + rng.normal(0, model.colour / 3, 3)
    if model.tone:
        out = np.clip(out, 0, 1) ** np.exp(rng.normal(0, model.tone))
        grey = luminance(out)[..., None]
        out = grey + (out - grey) * np.exp(rng.normal(0, model.tone))
    if model.texture:
        grain = rng.normal(size=(size, size))
        grain = ndimage.gaussian_filter(grain, 0.7) - ndimage.gaussian_filter(grain, 2.0)
        out = out + model.texture * rng.uniform(0.5, 1.5) * (grain / grain.std())[..., None]
    kind, mask = "", np.zeros((size, size), dtype=bool)
    if rng.random() < model.hallucination:
        kinds = HALLUCINATIONS if model.family == _LGM else ("removed_structure",)
        kind = kinds[rng.integers(len(kinds))]
        out, mask = _HALLUCINATE[kind](np.clip(out, 0, 1), rng, donor)
    return Restoration(quantise(out), kind, mask)


def clean_fidelity(restoration: Restoration, clean: np.ndarray) -> float:
    """Fidelity to the clean scene, which no annotator sees: only the simulation can compute it.

    Structural fidelity (SSIM to the clean scene, per colour channel) minus colour error (RMSE), both on the
    faithful pixels, minus a penalty for a hallucination that grows with its area. Written to ground_truth.csv
    beside the perceived utility, to show how far what people can judge is from what the clean scene says.
    """
    faithful = ~restoration.mask
    ssim = structural_similarity(
        restoration.image, clean, data_range=1.0, channel_axis=-1, full=True, gaussian_weights=True
    )[1].mean(axis=-1)
    rmse = np.sqrt(np.mean((restoration.image - clean)[faithful] ** 2))
    penalty = 0.4 + 2.0 * restoration.mask.mean() if restoration.hallucination else 0.0
    return float(ssim[faithful].mean() - 1.5 * rmse - penalty)
