"""The 16 LL-Bench tasks (docs/data_contract.md) as simulated real-world degradations with a severity in [0, 1].

Each function follows the usual physical or processing model of its degradation (Poisson–Gaussian sensor
noise, blur kernels, JPEG coding, atmospheric scattering, wavelength-dependent attenuation, ...), so that
restorations and metrics face the kind of corruption they meet in real photographs.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

TASKS = (
    "noise",
    "motion_blur",
    "defocus_blur",
    "jpeg",
    "low_resolution",
    "low_light",
    "haze",
    "rain",
    "snow",
    "raindrop",
    "underwater",
    "shadow",
    "hdr",
    "old_photo",
    "flare",
    "reflection",
)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def quantise(image: np.ndarray) -> np.ndarray:
    """What an 8-bit PNG stores: every image is judged and saved at these levels."""
    return to_uint8(image).astype(np.float32) / 255.0


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, (sigma, sigma, 0)[: image.ndim], mode="reflect")


def luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return ndimage.convolve(image, (kernel / kernel.sum())[..., None], mode="reflect")


def _line_kernel(length: float, angle: float) -> np.ndarray:
    half = int(np.ceil(length / 2)) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.float32)
    dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
    rr, cc, val = draw.line_aa(round(half - dy), round(half - dx), round(half + dy), round(half + dx))
    kernel[rr, cc] = val
    return kernel


def _field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth random field scaled to [0, 1] (depth maps, illumination)."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="reflect")
    return (field - field.min()) / (np.ptp(field) + 1e-8)


def noise(image, severity, rng):
    """Poisson–Gaussian sensor noise: shot noise grows with brightness, read noise does not."""
    shot, read = 0.02 + 0.1 * severity, 0.01 + 0.06 * severity
    std = np.sqrt(shot**2 * image + read**2)
    return image + std * rng.normal(size=image.shape).astype(np.float32)


def motion_blur(image, severity, rng):
    """Camera shake along a straight path of random direction."""
    return _convolve(image, _line_kernel(3 + 14 * severity, rng.uniform(0, np.pi)))


def defocus_blur(image, severity, rng):
    """An out-of-focus lens: a uniform disc (bokeh) kernel."""
    radius = 1.0 + 4.0 * severity + rng.uniform(-0.3, 0.3)
    r = int(np.ceil(radius)) + 1
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return _convolve(image, np.clip(radius + 0.5 - np.hypot(x, y), 0, 1).astype(np.float32))


def jpeg(image, severity, rng):
    """Heavy JPEG compression (4:2:0 chroma subsampling): blocking, ringing, colour bleeding."""
    buffer = io.BytesIO()
    quality = int(np.clip(round(40 - 36 * severity + rng.uniform(-3, 3)), 3, 60))
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0


def low_resolution(image, severity, rng):
    """An image captured at low resolution and upscaled by bicubic interpolation."""
    size = image.shape[0]
    small = max(8, round(size / (2 + 4 * severity + rng.uniform(0, 0.5))))
    pil = Image.fromarray(to_uint8(image)).resize((small, small), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def low_light(image, severity, rng):
    """Under-exposure: a dark, gamma-compressed signal with amplified sensor noise and a cold cast."""
    gain = 0.35 - 0.27 * severity
    dark = gain * image**1.2 * np.array([0.95, 1.0, 1.1], dtype=np.float32)
    std = np.sqrt(0.004 * dark + (0.004 + 0.012 * severity) ** 2)
    return dark + std * rng.normal(size=image.shape).astype(np.float32)


def haze(image, severity, rng):
    """Atmospheric scattering I = J t + A (1 - t) with depth growing towards the top of the frame."""
    size = image.shape[0]
    depth = 0.6 * np.linspace(1, 0, size)[:, None] + 0.4 * _field(rng, (size, size), size / 6)
    transmission = np.exp(-(0.5 + 2.0 * severity) * depth)[..., None].astype(np.float32)
    airlight = rng.uniform(0.75, 0.95) * np.array([1.0, 1.0, rng.uniform(0.95, 1.05)], dtype=np.float32)
    return image * transmission + airlight * (1 - transmission)


def _streaks(rng, size, count, length, angle, width):
    points = np.zeros((size, size), dtype=np.float32)
    points[rng.integers(0, size, count), rng.integers(0, size, count)] = rng.uniform(0.5, 1.0, count)
    streaks = ndimage.convolve(ndimage.gaussian_filter(points, width), _line_kernel(length, angle))
    return streaks / (streaks.max() + 1e-8)


def rain(image, severity, rng):
    """Bright, slanted rain streaks over a faint veil of scattered light."""
    size = image.shape[0]
    angle = np.pi / 2 + rng.uniform(-0.35, 0.35)
    layer = _streaks(rng, size, int(150 + 600 * severity), rng.uniform(8, 20), angle, 0.5)
    veil = 0.12 * severity
    return image * (1 - veil) + veil * 0.8 + (0.5 + 0.5 * severity) * layer[..., None]


def snow(image, severity, rng):
    """Falling snowflakes of several sizes in front of a brightened, low-contrast scene."""
    size = image.shape[0]
    flakes = np.zeros((size, size), dtype=np.float32)
    for count, sigma in ((int(200 + 800 * severity), 0.6), (int(15 + 60 * severity), 1.6)):
        points = np.zeros_like(flakes)
        points[rng.integers(0, size, count), rng.integers(0, size, count)] = 1.0
        spots = ndimage.gaussian_filter(points, sigma)
        flakes = np.maximum(flakes, spots / spots.max())
    alpha = np.clip((0.6 + 0.4 * severity) * flakes * 1.5, 0, 1)[..., None]
    veil = 0.1 * severity
    return (image * (1 - veil) + veil) * (1 - alpha) + 0.97 * alpha


def raindrop(image, severity, rng):
    """Water drops on the lens: each one shows a blurred, upside-down view of what lies behind it."""
    size = image.shape[0]
    behind = blur(image, 2.5)
    out = image.copy()
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(4 + 10 * severity)):
        cy, cx = rng.uniform(0, size, 2)
        ry = rng.uniform(4, 8 + 8 * severity)
        rx = ry * rng.uniform(0.7, 1.1)
        dist = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        inside = np.clip((1.0 - dist) * 4, 0, 1)[..., None]
        src_y = np.clip(np.round(cy - (yy - cy) * 1.5), 0, size - 1).astype(int)
        src_x = np.clip(np.round(cx - (xx - cx) * 1.5), 0, size - 1).astype(int)
        lens = behind[src_y, src_x] * 1.08 + 0.04
        rim = np.exp(-(((dist - 1.0) / 0.15) ** 2))[..., None] * 0.25
        out = out * (1 - inside) + lens * inside - rim * (1 - inside) * out
    return out


def underwater(image, severity, rng):
    """Wavelength-dependent absorption (red first) and a blue-green backscatter veil, slightly blurred."""
    distance = 0.4 + 1.6 * severity
    attenuation = np.exp(-distance * np.array([2.2, 0.6, 0.4]) * rng.uniform(0.8, 1.2)).astype(np.float32)
    backscatter = np.array([0.05, rng.uniform(0.3, 0.45), rng.uniform(0.4, 0.55)], dtype=np.float32)
    direct = blur(image, 0.4 + 0.8 * severity) * attenuation
    return direct + backscatter * (1 - np.exp(-0.8 * distance))


def shadow(image, severity, rng):
    """A cast shadow: a large soft-edged polygon with less, and bluer (skylight), illumination."""
    size = image.shape[0]
    corners = rng.uniform(-0.2 * size, 1.2 * size, (5, 2))
    centre = rng.uniform(0.3 * size, 0.7 * size, 2)
    order = np.argsort(np.arctan2(corners[:, 0] - centre[0], corners[:, 1] - centre[1]))
    mask = np.zeros((size, size), dtype=np.float32)
    rr, cc = draw.polygon(corners[order, 0], corners[order, 1], shape=mask.shape)
    mask[rr, cc] = 1.0
    mask = ndimage.gaussian_filter(mask, rng.uniform(1.5, 5.0))[..., None]
    darkness = (0.35 + 0.5 * severity) * np.array([1.0, 0.97, 0.88], dtype=np.float32)
    return image * (1 - mask * darkness)


def hdr(image, severity, rng):
    """A scene wider than one exposure's dynamic range (the HDR task): the single exposure that keeps the
    mid-tones blows the highlights out (with bloom) and crushes the shadows into noisy black."""
    pivot = rng.uniform(0.35, 0.6)
    exposed = pivot + (image - pivot) * (1.6 + 2.0 * severity)
    bloom = blur(np.clip(exposed - 1.0, 0, None), 3.0)
    dark = np.clip(exposed, 0, None)
    read_noise = 0.03 * severity * rng.normal(size=image.shape[:2]).astype(np.float32)[..., None]
    return dark + read_noise * (dark < 0.15) + 0.5 * bloom


def old_photo(image, severity, rng):
    """An aged print: faded sepia tones, film grain, vignetting, dust and bright scratches."""
    size = image.shape[0]
    grey = luminance(image)[..., None]
    sepia = grey * np.array([1.07, 0.9, 0.68], dtype=np.float32) + 0.05
    tone = 0.35 + 0.6 * severity
    out = (image * (1 - tone) + sepia * tone) * (0.85 - 0.25 * severity) + 0.12 * severity
    out = out + 0.03 * severity * ndimage.gaussian_filter(rng.normal(size=(size, size)), 0.7)[..., None]
    yy, xx = (np.mgrid[0:size, 0:size] - size / 2) / (size / 2)
    out = out * (1 - 0.3 * severity * (yy**2 + xx**2))[..., None]
    marks = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(3 + 12 * severity)):
        x0, x1 = rng.uniform(0, size, 2)
        x1 = x0 + (x1 - x0) * 0.15
        y0, y1 = sorted(rng.uniform(0, size, 2))
        rr, cc, val = draw.line_aa(int(y0), int(x0), int(y1), int(np.clip(x1, 0, size - 1)))
        marks[rr, cc] = np.maximum(marks[rr, cc], val * rng.uniform(0.5, 1.0))
    for _ in range(int(5 + 25 * severity)):
        rr, cc = draw.disk(rng.uniform(0, size, 2), rng.uniform(0.5, 2.0), shape=marks.shape)
        marks[rr, cc] = rng.uniform(0.4, 0.9)
    return out * (1 - marks[..., None]) + 0.92 * marks[..., None]


def flare(image, severity, rng):
    """Lens flare from a bright light in or near the frame: a glowing source with starburst rays, veiling glare
    that lifts and tints the blacks, and coloured ghost rings mirrored through the image centre."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    source = rng.uniform(0.05 * size, 0.95 * size, 2)
    r = np.hypot(yy - source[0], xx - source[1]) / size
    theta = np.arctan2(yy - source[0], xx - source[1])
    rays = np.exp(-r / 0.3) * np.abs(np.cos(rng.integers(3, 7) * (theta - rng.uniform(0, np.pi)))) ** 30
    veil = (0.1 + 0.25 * severity) * np.exp(-r / 0.7)
    tint = np.array([1.0, rng.uniform(0.8, 0.95), rng.uniform(0.55, 0.8)], dtype=np.float32)
    light = (np.exp(-r / 0.06) + 0.5 * rays + veil)[..., None] * tint
    centre = np.full(2, size / 2, dtype=np.float32)
    for _ in range(rng.integers(2, 5)):
        at = centre + (source - centre) * rng.uniform(-1.2, 0.6)
        radius = rng.uniform(0.03, 0.1) * size
        ring = np.exp(-(((np.hypot(yy - at[0], xx - at[1]) - radius) / (0.4 * radius)) ** 2))
        light = light + 0.25 * ring[..., None] * rng.uniform(0.2, 1.0, 3).astype(np.float32)
    return image * (1 - 0.3 * veil[..., None]) + (0.5 + 0.7 * severity) * light


def reflection(image, severity, rng):
    """Shot through glass: a dimmer, out-of-focus reflection of what lies behind the camera (here the scene
    mirrored and shifted), of varying strength across the pane, with a faint second ghost from the back face."""
    size = image.shape[0]
    mirrored = image[:, ::-1] if rng.random() < 0.5 else image[::-1]
    reflected = blur(np.roll(mirrored, tuple(rng.integers(-size // 3, size // 3, 2)), axis=(0, 1)), 1.5)
    reflected = 0.7 * reflected + 0.3 * np.roll(reflected, tuple(rng.integers(2, 5, 2)), axis=(0, 1))
    strength = (0.25 + 0.45 * severity) * (0.4 + 0.6 * _field(rng, (size, size), size / 4))[..., None]
    return image * (1 - 0.4 * strength) + strength * reflected


DEGRADATIONS = {
    "noise": noise,
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "jpeg": jpeg,
    "low_resolution": low_resolution,
    "low_light": low_light,
    "haze": haze,
    "rain": rain,
    "snow": snow,
    "raindrop": raindrop,
    "underwater": underwater,
    "shadow": shadow,
    "hdr": hdr,
    "old_photo": old_photo,
    "flare": flare,
    "reflection": reflection,
}


def degrade(clean: np.ndarray, task: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Degrade a float RGB image in [0, 1] by `task` at `severity`; returns it at 8-bit levels."""
    return quantise(DEGRADATIONS[task](clean, severity, rng))
