"""The one image decoder: every image a user gives (scoring, the image check of a bench, training) is read here.

PIL's `convert("RGB")` saturates 16-bit greyscale to white and drops alpha onto black, so a restored 16-bit PNG
would get a normal-looking score of a white image. `to_rgb` maps every mode to 8-bit RGB as a viewer shows it:
16-bit (and 32-bit integer) greyscale scaled to 8 bits, alpha composited on white (`ALPHA_BACKGROUND`), palette
and CMYK converted, EXIF orientation applied. Oversized images (PIL's decompression-bomb limit) are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from llscore.errors import ImageError, reason

ALPHA_BACKGROUND = (255, 255, 255)
"""What shows through transparent pixels: white, as in a browser or an image viewer."""
_WIDE_GREY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
ORIENTATION = 0x0112
"""The EXIF tag that says how to rotate / mirror the stored pixels for display."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as the image is meant to be seen (see the module docstring)."""
    if image.getexif().get(ORIENTATION, 1) != 1:  # transposing copies the image: only when the file asks
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GREY:
        values = np.asarray(image, dtype=np.float64)
        scale = 255 / 65535 if image.mode != "I" or values.max() > 255 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "F":
        raise ImageError(
            "floating-point images are not supported; save the image with 8 or 16 bits per channel"
        )
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _bomb(path: str | Path) -> ImageError:
    return ImageError(
        f"{path}: refusing an image of more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)"
    )


def read_image(path: str | Path) -> Image.Image:
    """Decode the file at `path` to 8-bit RGB (`to_rgb`); any failure is one `ImageError` naming the file."""
    try:
        with Image.open(path) as opened:
            limit = Image.MAX_IMAGE_PIXELS  # None is PIL's "no limit" (often set by training code)
            if limit is not None and opened.width * opened.height > limit:
                raise _bomb(path)
            opened.load()
            return to_rgb(opened)
    except Image.DecompressionBombError as err:  # PIL's own refusal, from twice the limit
        raise _bomb(path) from err
    except ImageError as err:
        if str(err).startswith(f"{path}: "):
            raise
        raise ImageError(f"{path}: {err}") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{path}: cannot decode image ({reason(err)})") from err
