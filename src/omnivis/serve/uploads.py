"""Uploaded bytes -> a checked PIL image, or an ``ApiError`` that says what is wrong with it.

Everything is decided from the header before any pixel is decoded: the format (by content, never by
file name, so a PDF renamed .png is refused), the pixel count (a decompression bomb is refused
before it allocates), animation. Odd but valid images (CMYK, 16-bit, palette with transparency) are
converted the way a viewer shows them, so they get an answer rather than an error.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from omnivis.serve.api_errors import ApiError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


def decode_base64(text: object, param: str) -> bytes:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) -> bytes."""
    if not isinstance(text, str) or not text:
        raise ApiError(422, f"'{param}' must be a base64 string of an image file", param)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"'{param}' is not valid base64", param) from None


def open_header(data: bytes, max_pixels: int, name: str = "image") -> Image.Image:
    """The upload opened and checked from its header alone (format, size, frames); no pixel decoded."""
    if not data:
        raise ApiError(422, f"{name}: the file is empty", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{name}: {exc}", name) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(415, f"{name}: not an image file in an accepted format ({', '.join(FORMATS)})", name) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ApiError(422, f"{name}: the image is {width}x{height} pixels", name)
    if width * height > max_pixels:
        raise ApiError(413, f"{name}: the image is {width}x{height} = {width * height} pixels; the limit is "
                       f"{max_pixels}", name)
    if getattr(image, "n_frames", 1) > 1:
        raise ApiError(422, f"{name}: animated or multi-frame images are not accepted; send one frame", name)
    return image


def decode_pixels(image: Image.Image, name: str = "image") -> Image.Image:
    """Decode an image from ``open_header``: corrupt data is a 422; the result is RGB or L as viewed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            return as_viewed(image)
    except Exception as exc:  # Pillow raises many types for broken data (OSError, ValueError, SyntaxError, ...)
        raise ApiError(422, f"{name}: the image data is corrupt or truncated ({type(exc).__name__}: {exc})",
                       name) from None


def as_viewed(image: Image.Image) -> Image.Image:
    """RGB or L as a viewer shows the image: 16-bit and float scaled to 8 bits, CMYK converted,
    transparency composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")
