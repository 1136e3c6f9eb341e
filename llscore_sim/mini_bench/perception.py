"""What LL-Bench-mini's simulated annotators perceive: a function of the degraded input and the restorations only.

LL-Bench's annotators see the degraded input and the restorations of it side by side; real-world degraded
photographs have no clean reference. The simulated annotators therefore never see the clean scene: everything
here takes the input, the restorations and where a restoration's content is unsupported (its hallucination
mask), and nothing else. The human model is documented in docs/llbench_mini.md; in short:

- consensus: the pixel-wise median of the restorations, what they agree the input shows once restored;
  Δ = input − consensus is the degradation they agree on removing.
- residual degradation: how much of Δ a restoration still shows, relative to the consensus (0: as restored
  as the consensus, 1: as degraded as the input, < 0: more restored), weighted by how visible the input's
  degradation is (1 − SSIM(input, consensus)).
- lost texture: the log ratio of the restoration's fine detail on the scene's structures to the consensus's;
  below 0 it looks over-smoothed.
- halos and ringing: the bright and dark bands that over-sharpening draws along edges. The restoration's
  deviation from the consensus, projected on the consensus's own band-pass edge pattern (consensus − its blur
  at `HALO_SIGMA`) on and around the scene's structures, gives a sharpening gain; its visibility is that gain
  (when positive) times the edge pattern's RMS amplitude, i.e. the amplitude of the added bands in 0–1 pixel
  units. People dislike halos strongly: the penalty is `HALO_WEIGHT` × visibility.
- grain: noise-like fine texture above the consensus's (a robust estimate on the finest wavelet band).
- colour / tone shift: the distance of its mean colour from the consensus's once its residual degradation is
  accounted for: a shift that neither the input nor the removal of its degradation calls for.
- hallucination: content the input contradicts. Its visibility is the contrast between the restoration and
  the consensus inside the unsupported region (at `CONTRAST_SCALE`, where the input still shows content) times
  the square root of the region's area; an annotator spots it with probability
  `detection × (1 − exp(−visibility / VISIBILITY_SCALE))` and, having spotted it, rates the image lower by
  `HALLUCINATION_PENALTY + HALLUCINATION_AREA_PENALTY × area`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from .degradations import blur, luminance

RESIDUAL_WEIGHT = 1.5
TEXTURE_LOSS_WEIGHT = 0.3
HALO_WEIGHT = 10.0
HALO_SIGMA = 1.5
GRAIN_WEIGHT = 4.0
COLOUR_WEIGHT = 3.0
CONTRAST_SCALE = 1.5
VISIBILITY_SCALE = 0.02
HALLUCINATION_PENALTY = 0.5
HALLUCINATION_AREA_PENALTY = 2.0
STRUCTURE_QUANTILE = 0.75


@dataclass(frozen=True)
class Perception:
    """What one restoration visibly does, next to the input and the other restorations of it."""

    residual: float  # visible residual degradation (residual fraction × input's visible degradation)
    detail: float  # log ratio of fine detail on the scene's structures to the consensus's
    halo: float  # amplitude of the over-sharpening bands along edges (0-1 pixel units)
    grain: float  # noise-like fine texture above the consensus's (std, 0-1 pixel units)
    colour_shift: float  # mean colour shift not explained by residual degradation (0-1 pixel units)
    hallucination_visibility: float  # 0 when the restoration is faithful
    hallucination_area: float  # share of the frame whose content is unsupported

    @property
    def base_utility(self) -> float:
        """The perceived utility before any hallucination is spotted (higher is better)."""
        return -(
            RESIDUAL_WEIGHT * self.residual
            + TEXTURE_LOSS_WEIGHT * max(0.0, -self.detail)
            + HALO_WEIGHT * self.halo
            + GRAIN_WEIGHT * self.grain
            + COLOUR_WEIGHT * self.colour_shift
        )

    @property
    def hallucination_penalty(self) -> float:
        """How much lower an annotator who spots the hallucination rates the image."""
        return HALLUCINATION_PENALTY + HALLUCINATION_AREA_PENALTY * self.hallucination_area

    def spot_probability(self, detection: float) -> float:
        """P(an annotator of the given detection ability spots the hallucination): grows with its visibility."""
        return detection * (1.0 - np.exp(-self.hallucination_visibility / VISIBILITY_SCALE))


def noise_level(image: np.ndarray) -> float:
    """Robust noise std of the luminance: median absolute finest diagonal Haar coefficient / 0.6745."""
    grey = luminance(image)
    h, w = (s - s % 2 for s in grey.shape)
    x = grey[:h, :w]
    diagonal = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / 0.6745)


def _fine_detail(grey: np.ndarray) -> np.ndarray:
    return np.abs(ndimage.gaussian_filter(grey, 0.7) - ndimage.gaussian_filter(grey, 1.5))


def halo_visibility(deviation: np.ndarray, edges: np.ndarray, near_structure: np.ndarray) -> float:
    """Amplitude of over-sharpening bands: the positive gain of a restoration's grey-level `deviation` from the
    consensus along the consensus's band-pass edge pattern `edges`, times that pattern's RMS, measured on the
    `near_structure` pixels (0 for a restoration no sharper than the consensus)."""
    pattern = edges[near_structure]
    energy = float(np.sum(pattern * pattern))
    if energy < 1e-10:
        return 0.0
    gain = float(np.sum(deviation[near_structure] * pattern) / energy)
    return max(0.0, gain) * float(np.sqrt(energy / pattern.size))


def consensus(restorations: np.ndarray) -> np.ndarray:
    """The pixel-wise median of a source's restorations, shape (H, W, 3)."""
    return np.median(restorations, axis=0)


def perceive(
    degraded: np.ndarray, restorations: np.ndarray, masks: np.ndarray, agreed: np.ndarray | None = None
) -> list[Perception]:
    """How each restoration of one input looks next to the input and the others.

    `degraded` (H, W, 3) and `restorations` (n, H, W, 3) are float RGB in [0, 1]; `masks` (n, H, W) bool marks
    each restoration's content that the input does not support (all False when it is faithful). `agreed` is
    the consensus to judge against (default: these restorations' own); a new output is judged against the
    consensus of the restorations it would be shown beside.
    """
    agreed = consensus(restorations) if agreed is None else agreed
    degradation = degraded - agreed
    visible = 1.0 - structural_similarity(
        degraded, agreed, data_range=1.0, channel_axis=-1, gaussian_weights=True
    )
    agreed_grey = luminance(agreed)
    structure = ndimage.gaussian_gradient_magnitude(agreed_grey, 1.5)
    on_structure = structure >= np.quantile(structure, STRUCTURE_QUANTILE)
    agreed_detail = _fine_detail(agreed_grey)[on_structure].mean() + 1e-4
    edges = agreed_grey - ndimage.gaussian_filter(agreed_grey, HALO_SIGMA)
    near_structure = ndimage.binary_dilation(on_structure, iterations=2)
    agreed_noise = noise_level(agreed)
    agreed_smooth = blur(agreed, CONTRAST_SCALE)
    perceptions = []
    for image, mask in zip(restorations, masks, strict=True):
        faithful = ~mask
        delta = degradation[faithful]
        energy = float(np.sum(delta * delta))
        deviation = (image - agreed)[faithful]
        residual = float(np.sum(deviation * delta) / energy) if energy > 1e-8 else 0.0
        grey = luminance(image)
        detail = _fine_detail(grey)[on_structure].mean() + 1e-4
        shift = (deviation - residual * delta).mean(axis=0)
        area = float(mask.mean())
        visibility = 0.0
        if area > 0:
            contrast = np.sqrt(np.mean((blur(image, CONTRAST_SCALE) - agreed_smooth)[mask] ** 2))
            visibility = float(contrast * np.sqrt(area))
        perceptions.append(
            Perception(
                residual=float(visible * np.clip(residual, -1.0, 2.0)),
                detail=float(np.log(detail / agreed_detail)),
                halo=halo_visibility(grey - agreed_grey, edges, near_structure),
                grain=max(0.0, noise_level(image) - agreed_noise),
                colour_shift=float(np.linalg.norm(shift)),
                hallucination_visibility=visibility,
                hallucination_area=area,
            )
        )
    return perceptions
