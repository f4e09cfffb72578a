"""Images as uint8 tensors (C, H, W): what every training pipeline and predictor decodes to.

Plain 8-bit PNG and JPEG files (the bulk of any real folder) are decoded by ``torchvision.io``
(libpng / libjpeg-turbo, no PIL objects, about 1.6x faster on small files); everything else
(alpha, palettes with transparency, 16-bit, TIFF, BMP, WebP, broken files) goes through the one
``load_image``. Both give the same pixels: grey is PIL's ``L`` formula in integers
(``(19595 R + 38470 G + 7471 B + 2^15) >> 16``), EXIF orientation is applied, and a test compares
the two paths byte for byte. The bomb limit is checked on the header before either decodes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image

from omnivis.data.images import (
    MAX_IMAGE_PIXELS,
    NamedBytes,
    _open,
    array_to_image,
    load_image,
    normalize_image,
)
from omnivis.data.shards import ShardRecord

_FAST_FORMATS = frozenset({"PNG", "JPEG"})


def rgb_to_grey(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> (1, H, W) uint8, exactly PIL's ``convert("L")``."""
    r, g, b = image.to(torch.int32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)


def to_mode(image: torch.Tensor, mode: str) -> torch.Tensor:
    """A (1 or 3, H, W) uint8 tensor in ``mode``: "L" -> 1 channel, "RGB" -> 3."""
    channels = image.shape[0]
    if mode == "L":
        return image if channels == 1 else rgb_to_grey(image)
    return image if channels == 3 else image.expand(3, -1, -1).contiguous()


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An ``L`` or ``RGB`` PIL image -> (C, H, W) uint8 tensor."""
    array = np.asarray(image)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def _fast_decode(path: Path | NamedBytes, max_pixels: int) -> torch.Tensor | None:
    """torchvision's decode of a plain 8-bit L/RGB PNG or JPEG (a file, or a record's bytes); None for
    anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open(path) as handle:
                plain = (handle.format in _FAST_FORMATS and handle.mode in ("L", "RGB")
                         and "transparency" not in handle.info and handle.size[0] * handle.size[1] <= max_pixels)
    except Exception:  # noqa: BLE001 - load_image names whatever is wrong with the file
        return None
    if not plain:
        return None
    try:
        raw = path.getvalue() if isinstance(path, NamedBytes) else path.read_bytes()
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec; its decoders still work
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(data, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    except (RuntimeError, OSError, ValueError):
        return None  # truncated or corrupt: load_image gives the clear error
    if image.dtype != torch.uint8 or image.shape[0] not in (1, 3):
        return None
    return image


def decode_tensor(source: str | Path | np.ndarray | Image.Image | ShardRecord, mode: str = "RGB",
                  max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """A file, an in-memory array, a PIL image or a record in shards (``data/shards.py``, decoded from
    its stored file bytes exactly as the file would be) -> (1 or 3, H, W) uint8 tensor in ``mode``.

    Raises:
        ImageError: the file or record is missing, not an image, truncated, corrupt or too large (from
            ``load_image``, naming the file or record).
    """
    if isinstance(source, np.ndarray):
        return pil_to_tensor(array_to_image(source, mode))
    if isinstance(source, Image.Image):
        return pil_to_tensor(normalize_image(ImageOps.exif_transpose(source), mode))
    if isinstance(source, ShardRecord):
        data = source.read_bytes()
        fast = _fast_decode(NamedBytes(data, str(source)), max_pixels)
        if fast is not None:
            return to_mode(fast, mode)
        return pil_to_tensor(load_image(NamedBytes(data, str(source)), mode, max_pixels))
    fast = _fast_decode(Path(source), max_pixels)
    if fast is not None:
        return to_mode(fast, mode)
    return pil_to_tensor(load_image(source, mode, max_pixels))
