"""The one way omnivis turns a file or an array into an image.

Training, prediction and serving all call :func:`load_image` (files) or :func:`array_to_image`
(in-memory data), so a model always sees pixels prepared the same way: EXIF orientation applied,
transparency composited on white, high bit depths rescaled to 8 bits, and the result converted to
``"RGB"`` or ``"L"``. Anything that cannot be read becomes an :class:`~omnivis.errors.ImageError`
whose one-line message names the file and the problem.

Decompression bombs are refused by size before any pixel is decoded. PIL's global
``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: a truncated file is an error, not a grey band.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from omnivis.errors import DataError, ImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
"""File name endings (compared case-insensitively) that folder readers treat as images."""

MAX_IMAGE_PIXELS = 89_478_485
"""Largest width * height accepted (PIL's default bomb limit, about 0.25 GB of RGBA)."""

OUTPUT_MODES: tuple[str, ...] = ("RGB", "L")

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def _check_mode(mode: str) -> None:
    if mode not in OUTPUT_MODES:
        raise ValueError(f"unknown image mode {mode!r}; expected one of {', '.join(OUTPUT_MODES)}")


def _reason(exc: BaseException) -> str:
    """A short, path-free description of why PIL (or the OS) could not read a file."""
    if isinstance(exc, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text:
        return type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


_PLAIN_REASONS = (UnidentifiedImageError, FileNotFoundError, IsADirectoryError, PermissionError)


class NamedBytes(io.BytesIO):
    """An in-memory file whose ``str`` is the record it came from, so image errors name the record."""

    def __init__(self, data: bytes, label: str) -> None:
        super().__init__(data)
        self.label = label

    def __str__(self) -> str:
        return self.label


def as_file(source):
    """A path stays a path; a record in shards (``data/shards.ShardRecord``: anything with ``read_bytes``
    that is not a path) becomes its stored bytes as an in-memory file named after the record."""
    if hasattr(source, "read_bytes") and not isinstance(source, (str, os.PathLike)):
        return NamedBytes(source.read_bytes(), str(source))
    return source


def _open(path: str | Path) -> Image.Image:
    """``Image.open`` without PIL's size warning: callers compare the size with their own limit.

    PIL still raises ``DecompressionBombError`` above twice its own limit. ``catch_warnings`` is
    not thread-safe, but the only filter set here is "ignore" for this one category, so a race
    between threads can at worst leave PIL's warning silenced, which our own check makes redundant.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _bomb_message(path: str | Path, width: int, height: int, max_pixels: int) -> str:
    pixels = width * height
    return (
        f"{path}: image is {width} x {height} = {pixels} pixels, over the limit of {max_pixels} "
        "(decompression bomb?)"
    )


def _pil_bomb_message(path: str | Path, exc: BaseException) -> str:
    """Message for a bomb PIL caught itself (it reports the pixel count but not the size)."""
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    if found:
        pixels, limit = found.groups()
        return f"{path}: image is {pixels} pixels, over the limit of {limit} (decompression bomb?)"
    return f"{path}: image is too large ({_reason(exc)}) (decompression bomb?)"


def _to_uint8(values: np.ndarray, kind: str) -> np.ndarray:
    """Rescale a high-bit-depth or float image to uint8 by its real range.

    ``kind`` is ``"u16"`` (0..65535 -> /257), ``"int"`` (32-bit integers: as-is when within 0..255,
    /257 when within 0..65535, else min-max) or ``"float"`` (0..1 -> *255, else min-max). A constant
    image that needs min-max scaling becomes black, since it carries no contrast to keep.
    """
    values = np.asarray(values)
    if kind == "u16":
        return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)
    data = values.astype(np.float64)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if kind == "int" and low >= 0 and high <= 255:
        return data.astype(np.uint8)
    if kind == "int" and low >= 0 and high <= 65535:
        return np.round(data / 257.0).astype(np.uint8)
    if kind == "float" and low >= 0 and high <= 1:
        return np.round(data * 255.0).astype(np.uint8)
    if high == low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.round((data - low) * (255.0 / (high - low))).astype(np.uint8)


def _on_white(image: Image.Image) -> Image.Image:
    """Composite an image with alpha (or a transparent palette colour) on white, as RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def normalize_image(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """Convert a decoded image of any PIL mode to 8-bit ``mode`` ("RGB" or "L"): transparency on
    white, 16-bit and float rescaled. Used for PIL images handed to us in memory (API, server)."""
    _check_mode(mode)
    src = image.mode
    if src in _SIXTEEN_BIT_MODES:
        image = Image.fromarray(_to_uint8(np.asarray(image), "u16"), mode="L")
    elif src == "I":
        image = Image.fromarray(_to_uint8(np.asarray(image), "int"), mode="L")
    elif src == "F":
        image = Image.fromarray(_to_uint8(np.asarray(image), "float"), mode="L")
    elif src == "La":
        image = _on_white(image.convert("LA"))
    elif src in _ALPHA_MODES or "transparency" in image.info:
        image = _on_white(image)
    elif src == "1":
        image = image.convert("L")
    elif src not in ("L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, P, LAB, HSV, RGBX ...
    if image.mode != mode:
        image = image.convert(mode)
    return image


def load_image(path: str | Path, mode: str = "RGB", max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open, fully decode and normalise one image file.

    Every image omnivis reads from disk goes through here, so that training, prediction and serving
    agree on orientation, transparency and bit depth.

    Args:
        path: The image file (or a record in shards, read by :func:`as_file`).
        mode: ``"RGB"`` (H x W x 3) or ``"L"`` (H x W) 8-bit output.
        max_pixels: Largest width * height accepted; larger images are refused before decoding.
            PIL's own hard limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``) applies on top.

    Returns:
        A fully loaded image in ``mode``, detached from the file.

    Raises:
        ValueError: If ``mode`` is not "RGB" or "L".
        ImageError: If the file is missing, not an image, truncated, corrupt or too large.
    """
    _check_mode(mode)
    path = as_file(path)
    try:
        handle = _open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_pil_bomb_message(path, exc)) from exc
    except _PLAIN_REASONS as exc:
        raise ImageError(f"{path}: {_reason(exc)}") from exc
    except Exception as exc:  # PIL raises many types for bad headers; all mean "unreadable".
        raise ImageError(f"{path}: cannot open image ({_reason(exc)})") from exc
    with handle:
        width, height = handle.size
        if width * height > max_pixels:
            raise ImageError(_bomb_message(path, width, height, max_pixels))
        try:
            handle.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(_pil_bomb_message(path, exc)) from exc
        except Exception as exc:  # truncated data, bad checksums, decoder errors
            raise ImageError(f"{path}: cannot decode image ({_reason(exc)})") from exc
        try:
            image = ImageOps.exif_transpose(handle)
        except Exception:  # noqa: BLE001 - a malformed EXIF block does not spoil good pixels
            image = handle.copy()
        try:
            return normalize_image(image, mode)
        except (ValueError, OSError) as exc:
            raise ImageError(f"{path}: unsupported image mode {handle.mode} ({_reason(exc)})") from exc


def array_to_image(array: np.ndarray, mode: str = "RGB") -> Image.Image:
    """Turn in-memory pixels (built-in data, decoded uploads) into a normalised image.

    Args:
        array: H x W or H x W x C with C in 1, 3 or 4 (4 is RGBA, composited on white). dtype uint8,
            uint16 (rescaled by /257), bool (True is white), float in 0..1, or another integer type
            whose values lie within 0..255.
        mode: ``"RGB"`` or ``"L"``.

    Returns:
        An 8-bit image in ``mode``.

    Raises:
        ValueError: If ``mode`` is not "RGB" or "L".
        ImageError: If the shape, dtype or value range is not one of the above.
    """
    _check_mode(mode)
    data = np.asarray(array)
    shape = tuple(data.shape)
    if data.ndim not in (2, 3) or (data.ndim == 3 and shape[2] not in (1, 3, 4)) or 0 in shape:
        raise ImageError(f"array of shape {shape}: expected H x W or H x W x C with C in 1, 3 or 4")
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * 255
    elif data.dtype == np.uint16:
        data = _to_uint8(data, "u16")
    elif np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise ImageError(f"array of shape {shape}: float image contains NaN or infinity")
        low, high = float(data.min()), float(data.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ImageError(
                f"array of shape {shape}: float image must lie in 0..1, found {low:.4g}..{high:.4g}"
            )
        data = np.round(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif np.issubdtype(data.dtype, np.integer) and data.dtype != np.uint8:
        low, high = int(data.min()), int(data.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"array of shape {shape}: {data.dtype} values must lie in 0..255, found {low}..{high}"
            )
        data = data.astype(np.uint8)
    elif data.dtype != np.uint8:
        raise ImageError(f"array of shape {shape}: unsupported dtype {data.dtype}")
    data = np.ascontiguousarray(data)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim == 2:
        image = Image.fromarray(data, mode="L")
    elif data.shape[2] == 3:
        image = Image.fromarray(data, mode="RGB")
    else:
        image = _on_white(Image.fromarray(data, mode="RGBA"))
    return image if image.mode == mode else image.convert(mode)


def check_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Cheaply check that a file looks like an image, for scanning whole folders.

    Reads the header and runs PIL's ``verify()`` (checksums for PNG) without decoding pixels, so a
    folder of thousands of files is scanned quickly. Files that pass may still fail to decode;
    :func:`load_image` reports those when they are used.

    Args:
        path: The file to check.
        max_pixels: Largest width * height accepted.

    Returns:
        None if the file looks fine, else a short reason (no path) such as
        ``"cannot identify image file"``.
    """
    try:
        with _open(path) as handle:
            width, height = handle.size
            if width * height > max_pixels:
                pixels = width * height
                return f"image is {width} x {height} = {pixels} pixels, over the limit of {max_pixels}"
            handle.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"image too large ({_reason(exc)})"
    except Exception as exc:  # any failure to parse the header means "unreadable"
        return _reason(exc)
    return None


def load_images(inputs: Iterable[str | Path | Image.Image | np.ndarray], mode: str) -> list[Image.Image]:
    """Images from paths (through the one ``load_image``), PIL images or arrays, in ``mode``."""
    images = []
    for item in inputs:
        if isinstance(item, Image.Image):
            images.append(normalize_image(ImageOps.exif_transpose(item), mode))
        elif isinstance(item, np.ndarray):
            images.append(array_to_image(item, mode))
        else:
            images.append(load_image(item, mode))
    return images


def expand_image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files and folders (searched recursively for images) -> a sorted list of image files."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            if not found:
                raise DataError(f"{item}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    return paths
