"""read_raster on PNG/JPEG/GIF/TIFF files written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sitefusion.errors import ImageReadError
from sitefusion.io import read_image, read_raster

RNG = np.random.default_rng(0)


def grey8() -> np.ndarray:
    return RNG.integers(0, 256, (12, 10), dtype=np.uint8)


def write(tmp_path: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_png_grey_round_trip(tmp_path: Path) -> None:
    pixels = grey8()
    image = read_image(write(tmp_path, Image.fromarray(pixels), "g.png"))
    assert image.array.shape == (1, 12, 10)
    np.testing.assert_array_equal(image.array[0], pixels)
    assert image.metadata["format"] == "png"
    assert image.metadata["color_mode"] == "L"


def test_png_rgb_round_trip(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    image = read_image(write(tmp_path, Image.fromarray(pixels), "c.png"))
    assert image.array.shape == (3, 12, 10)
    np.testing.assert_array_equal(image.array, pixels.transpose(2, 0, 1))


def test_png_rgba_drops_alpha(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    image = read_image(write(tmp_path, Image.fromarray(pixels, "RGBA"), "a.png"))
    assert image.array.shape == (3, 12, 10)
    np.testing.assert_array_equal(image.array, pixels[..., :3].transpose(2, 0, 1))


def test_png_16_bit_grey_keeps_its_values(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
    image = read_image(write(tmp_path, Image.fromarray(pixels), "g16.png"))
    assert image.array.shape == (1, 12, 10)
    np.testing.assert_array_equal(image.array[0], pixels.astype(np.float32))
    assert image.array.max() > 255


@pytest.mark.parametrize(("mode", "channels"), [("P", 3), ("LA", 1), ("1", 1), ("CMYK", 3)])
def test_other_modes_are_converted(tmp_path: Path, mode: str, channels: int) -> None:
    source = Image.fromarray(RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert(mode)
    name = "x.tif" if mode == "CMYK" else "x.png"
    image = read_raster(write(tmp_path, source, name))
    assert image.array.shape == (channels, 12, 10)
    assert image.metadata["color_mode"] == mode


def test_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    pixels = np.full((16, 16, 3), (200, 50, 20), dtype=np.uint8)
    image = read_image(write(tmp_path, Image.fromarray(pixels), "c.jpg", quality=95))
    assert image.array.shape == (3, 16, 16)
    assert image.metadata["format"] == "jpeg"
    np.testing.assert_allclose(image.array[:, 8, 8], [200, 50, 20], atol=4)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    source = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = write(tmp_path, source, "rot.jpg", exif=exif)
    assert read_image(path).array.shape == (3, 20, 10)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.95])
def test_truncated_jpeg(tmp_path: Path, fraction: float) -> None:
    pixels = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = write(tmp_path, Image.fromarray(pixels), "full.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ImageReadError, match="truncated or corrupt JPEG data") as info:
        read_image(cut)
    assert info.value.__cause__ is not None


def test_truncated_png(tmp_path: Path) -> None:
    data = write(tmp_path, Image.fromarray(grey8()), "full.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated or corrupt PNG data"):
        read_image(cut)


def test_animated_gif_is_refused(tmp_path: Path) -> None:
    frames = [Image.fromarray(grey8()) for _ in range(3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="multi-frame GIF with 3 frames"):
        read_image(path)


def test_float_tiff_with_nan_is_rejected(tmp_path: Path) -> None:
    pixels = np.ones((8, 8), dtype=np.float32)
    pixels[2, 3] = np.nan
    path = write(tmp_path, Image.fromarray(pixels, "F"), "nan.tif")
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(path)
