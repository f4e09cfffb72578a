"""load_image / array_to_image / check_image: every mode ends as 8-bit RGB or L, bad files as ImageError."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from omnivis.data.images import (
    IMAGE_EXTENSIONS,
    array_to_image,
    check_image,
    load_image,
)
from omnivis.errors import ImageError


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _pixel(path: Path, xy=(0, 0), mode: str = "RGB"):
    image = load_image(path, mode=mode)
    assert image.mode == mode
    return image.getpixel(xy)


def test_rgb_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = _save(Image.fromarray(array), tmp_path / "a.png")
    image = load_image(path)
    assert image.size == (5, 6)
    np.testing.assert_array_equal(np.asarray(image), array)


def test_rgba_transparent_pixel_becomes_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))
    path = _save(rgba, tmp_path / "a.png")
    assert _pixel(path, (0, 0)) == (255, 0, 0)
    assert _pixel(path, (1, 0)) == (255, 255, 255)


def test_la_half_transparent_blends_with_white(tmp_path):
    path = _save(Image.new("LA", (1, 1), (0, 128)), tmp_path / "a.png")
    value = _pixel(path, mode="L")
    assert 125 <= value <= 129  # black at ~50% over white


def test_palette_with_transparency_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    path = _save(image, tmp_path / "a.png", transparency=0)
    assert Image.open(path).mode == "P"
    assert _pixel(path, (0, 0)) == (255, 255, 255)
    assert _pixel(path, (1, 0)) == (200, 0, 0)


def test_cmyk_converted_to_rgb(tmp_path):
    image = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 0))
    path = _save(image, tmp_path / "a.tif")
    assert _pixel(path, (0, 0)) == (255, 255, 255)
    assert _pixel(path, (1, 0)) == (0, 255, 255)


def test_sixteen_bit_png_rescaled_by_257(tmp_path):
    path = _save(Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)), tmp_path / "a.png")
    assert Image.open(path).mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(load_image(path, mode="L")), [[0, 100, 255]])
    assert _pixel(path, (2, 0)) == (255, 255, 255)


def test_int32_within_16_bits_and_beyond(tmp_path):
    within = _save(Image.fromarray(np.array([[0, 65535]], dtype=np.int32)), tmp_path / "a.tif")
    assert Image.open(within).mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(within, "L")), [[0, 255]])
    beyond = _save(Image.fromarray(np.array([[100_000, 200_000, 300_000]], dtype=np.int32)), tmp_path / "b.tif")
    np.testing.assert_array_equal(np.asarray(load_image(beyond, "L")), [[0, 128, 255]])  # min-max


def test_float_unit_range_and_min_max(tmp_path):
    unit = _save(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), tmp_path / "a.tif")
    assert Image.open(unit).mode == "F"
    np.testing.assert_array_equal(np.asarray(load_image(unit, "L")), [[0, 128, 255]])
    wide = _save(Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32)), tmp_path / "b.tif")
    np.testing.assert_array_equal(np.asarray(load_image(wide, "L")), [[0, 128, 255]])


def test_one_bit_and_grey_to_rgb(tmp_path):
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    path = _save(bilevel, tmp_path / "a.png")
    assert _pixel(path, (0, 0)) == (0, 0, 0)
    assert _pixel(path, (1, 0)) == (255, 255, 255)
    grey = _save(Image.new("L", (1, 1), 77), tmp_path / "b.png")
    assert _pixel(grey) == (77, 77, 77)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(Image.new("RGB", (40, 20), (0, 0, 255)), tmp_path / "a.jpg", exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_raises_naming_it(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / f"full.{fmt.lower()}", format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"cut\.(png|jpeg)"):
        load_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_non_image_and_missing_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.jpg: cannot identify image file"):
        load_image(text)
    with pytest.raises(ImageError, match=r"nothing\.png: file not found"):
        load_image(tmp_path / "nothing.png")


def test_pixel_limit_checked_before_decoding(tmp_path):
    path = _save(Image.new("RGB", (10, 10)), tmp_path / "a.png")
    with pytest.raises(ImageError, match=r"10 x 10 = 100 pixels, over the limit of 99"):
        load_image(path, max_pixels=99)
    assert load_image(path, max_pixels=100).size == (10, 10)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_crafted_bomb_header_is_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(ImageError, match=r"bomb\.png: .*over the limit of \d+ \(decompression bomb\?\)"):
        load_image(bomb)
    assert "over the limit" in (check_image(bomb) or "") or "too large" in (check_image(bomb) or "")


def test_unknown_mode_is_value_error(tmp_path):
    path = _save(Image.new("RGB", (1, 1)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="unknown image mode"):
        load_image(path, mode="CMYK")
    with pytest.raises(ValueError):
        array_to_image(np.zeros((2, 2), np.uint8), mode="RGBA")


@pytest.mark.parametrize(
    ("array", "expected_rgb"),
    [
        (np.full((2, 3), 9, np.uint8), (9, 9, 9)),
        (np.full((2, 3, 1), 9, np.uint8), (9, 9, 9)),
        (np.full((2, 3, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.zeros((2, 3, 4), np.uint8), (255, 255, 255)),  # fully transparent -> white
        (np.full((2, 3), 65535, np.uint16), (255, 255, 255)),
        (np.ones((2, 3), bool), (255, 255, 255)),
        (np.full((2, 3), 0.5, np.float64), (128, 128, 128)),
        (np.full((2, 3), 200, np.int64), (200, 200, 200)),
    ],
)
def test_array_to_image_shapes_and_dtypes(array, expected_rgb):
    image = array_to_image(array)
    assert image.mode == "RGB" and image.size == (3, 2)
    assert image.getpixel((0, 0)) == expected_rgb
    assert array_to_image(array, mode="L").mode == "L"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3, 2), np.uint8), r"\(2, 3, 2\)"),
        (np.zeros((4,), np.uint8), r"\(4,\)"),
        (np.zeros((1, 2, 3, 3), np.uint8), r"\(1, 2, 3, 3\)"),
        (np.full((2, 2), 3.0), "0..1"),
        (np.full((2, 2), 300, np.int32), "0..255"),
    ],
)
def test_array_to_image_rejects_bad_input(array, message):
    with pytest.raises(ImageError, match=message):
        array_to_image(array)


def test_check_image(tmp_path):
    good = _save(Image.new("RGB", (3, 3)), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    assert check_image(good) is None
    assert check_image(bad) == "cannot identify image file"
    assert check_image(tmp_path / "missing.png") == "file not found"


def test_extensions_cover_common_formats():
    assert {".jpg", ".png", ".webp", ".tiff"} <= set(IMAGE_EXTENSIONS)
