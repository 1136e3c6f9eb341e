"""llscore.images: every mode decodes to the 8-bit RGB a viewer shows, and every failure is one line naming the file."""

import numpy as np
import pytest
from PIL import Image

from llscore.data.tables import check_image
from llscore.errors import ImageError
from llscore.images import ALPHA_BACKGROUND, read_image, to_rgb


@pytest.fixture
def grey8() -> np.ndarray:
    return np.add.outer(np.arange(48), np.arange(64)).astype(np.uint8) * 2


def test_sixteen_bit_grey_reads_like_its_eight_bit_version(grey8, tmp_path):
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    sixteen, eight = (np.asarray(read_image(tmp_path / f"grey{b}.png")) for b in (16, 8))
    assert Image.open(tmp_path / "grey16.png").mode.startswith(
        "I"
    )  # PIL's convert("RGB") saturates this mode
    assert sixteen.shape == (48, 64, 3) and np.abs(sixteen.astype(int) - eight).max() <= 1


def test_alpha_is_composited_on_white_and_palette_and_orientation_are_applied(grey8, tmp_path):
    rgba = np.zeros((48, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, 32:, 3] = 255  # left half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    seen = np.asarray(read_image(tmp_path / "alpha.png"))
    assert (seen[:, :32] == ALPHA_BACKGROUND).all() and (seen[:, 32:] == (200, 0, 0)).all()

    Image.fromarray(grey8).convert("P").save(tmp_path / "palette.png")
    assert np.abs(np.asarray(read_image(tmp_path / "palette.png"))[..., 0].astype(int) - grey8).max() <= 8

    rotated = Image.fromarray(grey8).convert("RGB")
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated.save(tmp_path / "oriented.jpg", exif=exif)
    assert read_image(tmp_path / "oriented.jpg").size == (48, 64)
    plain = Image.fromarray(grey8).convert("RGB")
    assert (
        to_rgb(plain) is plain
    )  # an RGB image with nothing to fix is not copied (scoring reads it per question)


def test_bad_files_are_one_line_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "._photo.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    with pytest.raises(ImageError, match=r"\._photo\.png: cannot decode image") as caught:
        read_image(tmp_path / "._photo.png")
    assert "\n" not in str(caught.value)
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    for limit in (
        50 * 50,
        80 * 80,
    ):  # beyond PIL's own error (2x the limit) and below it (only a PIL warning)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageError, match=rf"big\.png: refusing an image of more than {limit:,} pixels"):
            read_image(tmp_path / "big.png")
    assert check_image(str(tmp_path / "big.png")).startswith("refusing an image")


def test_a_sixteen_bit_grey_restoration_scores_like_its_eight_bit_version(
    grey8, llscore_checkpoints, tmp_path
):
    from llscore import LLScore

    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    Image.fromarray(np.full((48, 64), 255, dtype=np.uint8)).save(tmp_path / "white.png")
    metric = LLScore.from_pretrained(llscore_checkpoints["qwen2_5_vl"])
    scores = metric.score([tmp_path / f"{name}.png" for name in ("grey16", "grey8", "white")]).score
    assert scores[0] == pytest.approx(scores[1], abs=1e-5) and abs(scores[0] - scores[2]) > 1e-4


def test_no_pixel_limit_reads_any_size(tmp_path, monkeypatch):
    """Training code often sets `Image.MAX_IMAGE_PIXELS = None` (PIL's "no limit"); images still read."""
    Image.new("RGB", (100, 80)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert read_image(tmp_path / "big.png").size == (100, 80)
