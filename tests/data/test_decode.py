"""decode_tensor gives, byte for byte, the pixels of the one PIL loader, on every path it takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.decode import decode_tensor, rgb_to_grey
from omnivis.data.images import load_image
from omnivis.errors import ImageError


def _reference(path, mode: str) -> torch.Tensor:
    array = np.asarray(load_image(path, mode))
    return torch.from_numpy((array[:, :, None] if array.ndim == 2 else array).transpose(2, 0, 1).copy())


def _photo(rng, h=37, w=29) -> np.ndarray:
    smooth = np.cumsum(rng.integers(0, 9, (h, w, 3)), axis=1)  # JPEG-like content, not pure noise
    return (smooth % 256).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("kind", ["png_rgb", "png_grey", "jpeg_rgb", "jpeg_grey", "jpeg_exif", "png_alpha",
                                  "png_16bit", "palette", "bmp", "webp"])
def test_same_pixels_as_load_image(tmp_path, kind, mode):
    rng = np.random.default_rng(3)
    rgb = _photo(rng)
    grey = rgb[:, :, 0]
    path = tmp_path / f"{kind}.{ {'jpeg': 'jpg', 'bmp': 'bmp', 'webp': 'webp'}.get(kind.split('_')[0], 'png') }"
    if kind == "png_rgb":
        Image.fromarray(rgb).save(path)
    elif kind == "png_grey":
        Image.fromarray(grey).save(path)
    elif kind == "jpeg_rgb":
        Image.fromarray(rgb).save(path, quality=80)
    elif kind == "jpeg_grey":
        Image.fromarray(grey).save(path, quality=80)
    elif kind == "jpeg_exif":  # orientation 6: both paths must turn the image the same way
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(rgb).save(path, quality=90, exif=exif)
    elif kind == "png_alpha":
        rgba = np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
        Image.fromarray(rgba, mode="RGBA").save(path)
    elif kind == "png_16bit":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "bmp":
        Image.fromarray(rgb).save(path)
    else:
        Image.fromarray(rgb).save(path, lossless=True)
    tensor = decode_tensor(path, mode)
    assert tensor.dtype == torch.uint8 and tensor.shape[0] == (3 if mode == "RGB" else 1)
    assert torch.equal(tensor, _reference(path, mode))
    if kind == "jpeg_exif":
        assert tensor.shape[1:] == (29, 37)  # turned


def test_grey_formula_is_pils(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(rgb_to_grey(torch.from_numpy(rgb).permute(2, 0, 1))[0].numpy(), expected)


def test_arrays_and_pil_images(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (5, 7), dtype=np.uint8)
    assert torch.equal(decode_tensor(array, "L")[0], torch.from_numpy(array))
    assert decode_tensor(Image.fromarray(array), "RGB").shape == (3, 5, 7)


def test_bad_files_are_one_clear_error(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageError, match="truncated.png"):
        decode_tensor(truncated)
    with pytest.raises(ImageError, match="over the limit"):
        decode_tensor(good, max_pixels=100)
    with pytest.raises(ImageError, match="missing.png"):
        decode_tensor(tmp_path / "missing.png")
