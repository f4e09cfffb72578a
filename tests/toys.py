"""Toy data with a known answer, for tests that train a model and check that it learned.

A tiny model trained a few steps on real data reaches an accuracy that moves with the CPU, the BLAS
and the seed ("beats the untrained model" fails on some machine). On these toys one plain feature
decides the answer (the stripes' direction, a square's colour, an edge's sign), so any correct
training gets there with a wide margin on every machine, and a test can assert that.

The deciding feature is never the image's mean level alone: batch-norm subtracts the batch mean,
so a model trained a few dozen steps on "dark vs bright" images fits them in training mode and
then, with running statistics that have not caught up, scores at chance in eval mode. Stripes,
squares on a background and edges differ *within* an image, which batch-norm leaves alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: The classes of :func:`stripe_images`, in label order.
STRIPE_CLASSES = ("horizontal", "vertical", "diagonal")

#: The colour of each class of :func:`colour_square_scenes`.
SQUARE_COLOURS = {"red": (230, 30, 30), "green": (30, 220, 30), "blue": (40, 40, 235)}


def stripe_images(per_class: int, size: int = 16, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """``per_class`` (size, size) uint8 images of each :data:`STRIPE_CLASSES` class: sine stripes of a
    random period (4-6 px) and phase, plus noise. ``[(image, class index), ...]`` in class order."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for label, (ax, ay) in enumerate(((0, 1), (1, 0), (1, 1))):
        for _ in range(per_class):
            period, phase = rng.uniform(4, 6), rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (ax * xx + ay * yy) / period + phase)
            out.append((np.clip(128 + 90 * wave + rng.normal(0, 8, wave.shape), 0, 255).astype(np.uint8), label))
    return out


def write_stripes(root: str | Path, per_class: int = 40, size: int = 16, seed: int = 0) -> Path:
    """A class-folder dataset (``root/horizontal/000.png`` ...) whose class is the stripes' direction."""
    root = Path(root)
    for i, (image, label) in enumerate(stripe_images(per_class, size, seed)):
        folder = root / STRIPE_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


def colour_square_scenes(n: int, size: int = 32, side: int = 12, seed: int = 0) -> list[dict]:
    """``n`` scenes, each one solid square of a :data:`SQUARE_COLOURS` colour on a dark-grey background.

    Returns ``[{"image": (size, size, 3) uint8, "label": class index, "box": [x1, y1, x2, y2]}, ...]``;
    the classes take turns (scene i has class i % 3), the square's position is random.
    """
    rng = np.random.default_rng(seed)
    colours = list(SQUARE_COLOURS.values())
    scenes = []
    for i in range(n):
        label = i % len(colours)
        image = np.full((size, size, 3), 50, np.uint8)
        image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        image[y : y + side, x : x + side] = colours[label]
        scenes.append({"image": image, "label": label, "box": [float(x), float(y), float(x + side), float(y + side)]})
    return scenes


def write_colour_squares_coco(root: str | Path, n: int = 48, size: int = 32, side: int = 12,
                              seed: int = 0) -> tuple[Path, Path, Path]:
    """:func:`colour_square_scenes` as a user's files: PNGs, a COCO file with one category, ``square``
    (a box and a polygon mask per image), and a ``path,label`` CSV of image classes (the square's
    colour: red, green, blue).

    Segmentation (square vs background) and detection (where the square is) are then decided by
    every pixel's colour against the dark background, classification by the colour. (With the
    colours as COCO categories too, a tiny decoder labels some colour's pixels wrongly after a few
    epochs on some seeds: mIoU 0.38-0.90.)

    Returns (annotations.json, images folder, labels.csv).
    """
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = list(SQUARE_COLOURS)
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "square"}]}
    rows = ["path,label"]
    for i, scene in enumerate(colour_square_scenes(n, size, side, seed)):
        file_name = f"{i:03d}.png"
        Image.fromarray(scene["image"]).save(images / file_name)
        x1, y1, x2, y2 = scene["box"]
        coco["images"].append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
        coco["annotations"].append({
            "id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
            "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
        })
        rows.append(f"{file_name},{names[scene['label']]}")
    ann = images / "annotations.json"
    ann.write_text(json.dumps(coco))
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return ann, images, labels


def half_bright_images(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` (size, size) uint8 images, bright above a horizontal edge near the middle, dark below.

    Which way up such an image is shows in the sign of its one edge, so a rotation predictor
    learns the quarter turn at once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        edge = int(rng.integers(size * 3 // 8, size * 5 // 8 + 1))
        image = np.full((size, size), 35.0)
        image[:edge] = 220.0
        out.append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    return out


def flat_images(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` (size, size) uint8 images, each one random grey level with faint noise: every hidden
    patch equals the visible ones, so a masked autoencoder can reconstruct it almost exactly."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.uniform(20, 235) + rng.normal(0, 2, (size, size)), 0, 255).astype(np.uint8) for _ in range(n)]


def angled_stripes(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` (size, size) uint8 images of sine stripes, each at its own random angle, period and phase:
    the angle survives crops, brightness/contrast jitter and blur, so each image stays recognizable
    from any of its views (what contrastive and self-distillation methods learn)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(n):
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(5, 8), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + phase)
        out.append(np.clip(128 + 100 * wave + rng.normal(0, 4, wave.shape), 0, 255).astype(np.uint8))
    return out


def write_images(root: str | Path, images: list[np.ndarray]) -> Path:
    """A folder of loose (unlabeled) PNGs ``root/000.png`` ..., for pretraining."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / f"{i:03d}.png")
    return root


def write_colour_squares_masks(root: str | Path, n: int = 48, size: int = 32, side: int = 16, seed: int = 0) -> Path:
    """:func:`colour_square_scenes` as a mask folder: ``images/000.png``, ``masks/000.png`` (0
    background, 1 the square) and ``classes.txt`` (background, square). Returns ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.txt").write_text("background\nsquare\n")
    for i, scene in enumerate(colour_square_scenes(n, size, side, seed)):
        mask = np.zeros((size, size), np.uint8)
        x1, y1, x2, y2 = (int(v) for v in scene["box"])
        mask[y1:y2, x1:x2] = 1
        Image.fromarray(scene["image"]).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{i:03d}.png")
    return root


#: The classes of :func:`arrow_images`: ``left``/``right`` swap under a horizontal mirror, ``up``/``down`` do not.
ARROW_CLASSES = ("left", "right", "up", "down")


def arrow_images(classes: tuple[str, ...], per_class: int, size: int = 24, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """``per_class`` grey (size, size) arrows of each class in ``classes`` (a subset of
    :data:`ARROW_CLASSES`): a shaft and a triangular head, shifted by up to 2 px, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size // 2
    out = []
    for label, name in enumerate(classes):
        for _ in range(per_class):
            dy, dx = rng.integers(-2, 3, size=2)
            y, x = yy - c - dy, xx - c - dx
            if name in ("up", "down"):
                x, y = y, x  # the same arrow along the other axis
            sign = 1 if name in ("right", "down") else -1
            along, across = sign * x, np.abs(y)
            shaft = (np.abs(along) <= 7) & (across <= 1)
            head = (along >= 3) & (along <= 9) & (across <= 9 - along)
            image = np.where(shaft | head, 220, 30) + rng.normal(0, 10, (size, size))
            out.append((np.clip(image, 0, 255).astype(np.uint8), label))
    return out


def write_arrows(root: str | Path, classes: tuple[str, ...], per_class: int = 40, size: int = 24, seed: int = 0) -> Path:
    """A class-folder dataset of :func:`arrow_images` (``root/left/000.png`` ...)."""
    root = Path(root)
    for i, (image, label) in enumerate(arrow_images(classes, per_class, size, seed)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root
