"""Image-caption data for multimodal training: text-to-image diffusion and LiT-style image-text alignment.

Every source becomes a :class:`CaptionData` (images with one or more captions, and class texts such as
``"red circle"`` for zero-shot evaluation where the data has classes): ``builtin:shapes`` and
``builtin:shapes-pairs`` (generated scenes whose captions are true by construction, so text grounding
can be checked exactly, with colour-shape pairs held out on request), ``builtin:digits``, a CSV
``path,caption``, a COCO captions JSON, or a folder of class sub-folders ("a photo of a {class}").
Readers skip bad rows and missing files with their reason, or raise with ``strict``, as the others do.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from omnivis.data.builtin import load_digits_data, resolve_classification_data
from omnivis.data.readers import ClassificationData, ImageSample
from omnivis.data.skipped import Skipped, warn_skipped
from omnivis.errors import DataError

SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {  # every pair is over 80 apart: a jittered colour keeps its name
    "red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
    "yellow": (230, 210, 30), "purple": (140, 50, 190), "orange": (240, 130, 20),
}

CAPTION_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_HEADER: tuple[str, str] = ("path", "caption")
_DIGIT_TEMPLATES = ("a handwritten {d}", "the digit {w}", "the number {d} written by hand", "a picture of a {w}",
                    "a hand-drawn digit {d}", "a small grey image of the number {w}")
_ONE = ("a {s} {c} {k}", "a {c} {k}", "a {s} {c} {k} {p}", "a picture of a {c} {k}", "a {c} {k} {p}",
        "a {c} shape", "a {k}", "something {c}", "a {s} {k} {p}")
_TWO = ("a {s} {c} {k} {r} a {c2} {k2}", "a {c2} {k2} {inv} a {s} {c} {k}", "a {c} {k} {r} a {c2} {k2}",
        "a {c} {k} and a {c2} {k2}", "a {s} {c} {k} {r} a {s2} {c2} {k2}")
_REACH = {"circle": 0.5, "square": 0.5, "triangle": 0.577, "star": 0.55}  # centre-to-tip / extent: similar areas
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_ACCEPTED = ("builtin:shapes, builtin:shapes-pairs, builtin:digits, a .csv with the header 'path,caption', "
             "a COCO captions .json, or a folder of class sub-folders")


@dataclass(frozen=True)
class CaptionedImage:
    """One image with its captions.

    Attributes:
        source: A file, or an in-memory H x W x 3 (or H x W) uint8 image.
        captions: One or more non-empty captions; training draws one per step.
        name: Display name (path relative to the dataset root, or ``"shapes/0001"``).
        label: Index into :attr:`CaptionData.classes` for zero-shot evaluation, -1 if none.
        objects: ``(colour, shape, size)`` per generated object, so evaluations can check what a
            caption claims without parsing it.
    """

    source: Path | np.ndarray
    captions: tuple[str, ...]
    name: str
    label: int = -1
    objects: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.captions or not all(isinstance(c, str) and c.strip() for c in self.captions):
            raise ValueError(f"{self.name}: captions must be one or more non-empty strings, got {self.captions!r}")


@dataclass
class CaptionData:
    """Captioned images, with zero-shot class texts when the data has classes.

    Attributes:
        samples: The images, in a deterministic order.
        source: What the user passed (``"builtin:shapes"`` or a path), for reports.
        classes: Zero-shot label texts (``"red circle"``, ``"the digit 3"``); empty when unlabeled.
        skipped: ``(name, reason)`` for every row, record or file left out.
    """

    samples: list[CaptionedImage]
    source: str
    classes: list[str] = field(default_factory=list)
    skipped: Skipped = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices: Sequence[int] | np.ndarray) -> CaptionData:
        """The selected samples with the same classes, so label indices stay meaningful."""
        chosen = [self.samples[int(i)] for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        return CaptionData(chosen, self.source, list(self.classes), list(self.skipped))

    def labels(self) -> np.ndarray:
        """All labels as an int64 array of shape (N,), -1 where a sample has none."""
        return np.array([s.label for s in self.samples], dtype=np.int64)


def pair_label(colour: str, shape: str) -> str:
    """The zero-shot class text of a colour-shape pair, e.g. ``"red circle"``."""
    return f"{colour} {shape}"


def _shape_mask(shape: str, extent: float, box: tuple[int, int, int, int], rng: np.random.Generator,
                size: int) -> np.ndarray:
    """Mask of one object of side ``extent`` (a triangle's or star's tips ``_REACH`` x extent from its centre)
    fully inside ``box`` (pixel centres ``y0, y1, x0, x1``, inclusive); triangles and stars stand upright
    within +-15 degrees, so that they read as the words say even at 32 x 32."""
    from skimage.draw import disk, polygon

    y0, y1, x0, x1 = box
    half, reach = extent / 2, _REACH[shape] * extent
    cy, cx = rng.uniform(y0 + reach, y1 - reach), rng.uniform(x0 + reach, x1 - reach)
    mask = np.zeros((size, size), dtype=bool)
    if shape == "circle":
        mask[disk((cy, cx), half, shape=mask.shape)] = True
    elif shape == "square":
        side = max(2, int(np.floor(extent)))
        top = int(np.clip(round(cy - (side - 1) / 2), y0, y1 - side + 1))
        left = int(np.clip(round(cx - (side - 1) / 2), x0, x1 - side + 1))
        mask[top : top + side, left : left + side] = True
    else:
        points = 3 if shape == "triangle" else 10
        radii = np.full(points, reach) if points == 3 else np.tile([reach, 0.5 * reach], 5)
        theta = -np.pi / 2 + np.radians(rng.uniform(-15, 15)) + np.arange(points) * (2 * np.pi / points)
        mask[polygon(cy + radii * np.sin(theta), cx + radii * np.cos(theta), shape=mask.shape)] = True
    return mask


def _article(text: str) -> str:
    """Fix the article before a vowel ("a orange" -> "an orange", "a eight" -> "an eight")."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _position(cy: float, cx: float, size: int) -> str:
    """Where a centre lies by thirds: "in the centre", "on the left", "at the top", "in the top left"."""
    row = ("top", "", "bottom")[min(int(3 * (cy + 0.5) / size), 2)]
    col = ("left", "", "right")[min(int(3 * (cx + 0.5) / size), 2)]
    return (f"in the {row} {col}" if row and col else f"on the {col}" if col else f"at the {row}" if row
            else "in the centre")


def _relation(first: np.ndarray, second: np.ndarray) -> str:
    """How the first object's centre ``(y, x)`` lies relative to the second's, on the dominant axis."""
    dy, dx = first - second
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"  # rows grow downwards


def _captioned_scene(seed: int, index: int, size: int, count: int, allowed: set[int]) -> CaptionedImage:
    rng = np.random.default_rng([seed, index])
    ramp = np.linspace(-1, 1, size)
    grad = rng.uniform(-8, 8) * ramp[:, None] + rng.uniform(-8, 8) * ramp[None, :]
    canvas = np.repeat((rng.uniform(150, 200) + grad)[:, :, None], 3, axis=2)
    colours = list(SHAPE_COLOURS)
    first, second = (0, size // 2 - 1), (size // 2 + 1, size - 1)  # a one-pixel gap between halves
    if rng.random() < 0.5:
        first, second = second, first
    side_by_side = rng.random() < 0.5  # else one above the other; either way they never overlap
    halves = [(0, size - 1, *h) if side_by_side else (*h, 0, size - 1) for h in (first, second)]
    boxes = [(0, size - 1, 0, size - 1)] if count == 1 else halves
    objects, centres = [], []
    for box in boxes:
        pair = int(rng.integers(len(colours) * len(CAPTION_SHAPES)))
        while pair not in allowed:
            pair = int(rng.integers(len(colours) * len(CAPTION_SHAPES)))
        colour, shape = colours[pair // len(CAPTION_SHAPES)], CAPTION_SHAPES[pair % len(CAPTION_SHAPES)]
        large = bool(rng.random() < 0.5)
        fit = min(box[1] - box[0], box[3] - box[2]) / (2 * _REACH[shape])  # the largest extent the box holds
        extent = min((rng.uniform(0.45, 0.60) if large else rng.uniform(0.25, 0.35)) * size, fit)
        mask = _shape_mask(shape, extent, box, rng, size)
        canvas[mask] = np.array(SHAPE_COLOURS[colour]) + rng.uniform(-12, 12, size=3)
        objects.append((colour, shape, "large" if large else "small"))
        centres.append(np.argwhere(mask).mean(axis=0))
    canvas += rng.normal(0.0, 3.0, size=canvas.shape)
    (c, k, s), p = objects[0], _position(*centres[0], size)
    words = {"c": c, "k": k, "s": s, "p": p}
    if count == 2:
        rel = _relation(centres[0], centres[1])
        words.update(c2=objects[1][0], k2=objects[1][1], s2=objects[1][2], r=rel, inv=_INVERSE[rel])
    templates = _ONE if count == 1 else _TWO
    return CaptionedImage(
        source=np.clip(np.round(canvas), 0, 255).astype(np.uint8),
        captions=tuple(dict.fromkeys(_article(template.format(**words)) for template in templates)),
        name=f"shapes/{index:04d}",
        label=colours.index(c) * len(CAPTION_SHAPES) + CAPTION_SHAPES.index(k),
        objects=tuple(objects),
    )


def make_captioned_shapes(n: int, img_size: int = 32, seed: int = 0, max_objects: int = 1,
                          exclude_pairs: Collection[tuple[str, str]] = ()) -> CaptionData:
    """Generate scenes of coloured circles, squares, triangles and stars on grey, with true captions.

    Scene ``i`` depends only on ``(seed, i)``, so more scenes extend the set. Each has every caption its
    templates give (9 for one shape, 5 for two), naming colour, shape, size ("small": 25-35% of the side, "large": 45-60%, capped at half
    the side for two objects), position (by thirds of the mask centre) and, for two objects, their
    relation ("left of", "above" ...) on the axis where the centres differ most.

    Args:
        n: Number of scenes. img_size: Side of the square images, >= 16. seed: Non-negative seed.
        max_objects: Objects in every scene: 1, or 2 in opposite halves (never overlapping).
        exclude_pairs: ``(colour, shape)`` pairs redrawn whenever drawn, for held-out compositional
            evaluation; a scene that never drew one is the same as without the exclusion.

    Returns:
        ``classes``: every colour x shape pair label, colour-major (excluded ones too, so zero-shot
        scores the full set); ``label``: the first object's pair.

    Raises:
        ValueError: A bad count, size, seed or object count, an unknown pair, or every pair excluded.
    """
    if n < 0 or img_size < 16 or seed < 0 or max_objects not in (1, 2):
        raise ValueError(f"need n >= 0, img_size >= 16, seed >= 0 and max_objects in (1, 2), got {n}, "
                         f"{img_size}, {seed}, {max_objects}")
    classes = [pair_label(c, s) for c in SHAPE_COLOURS for s in CAPTION_SHAPES]
    for colour, shape in exclude_pairs:
        if colour not in SHAPE_COLOURS or shape not in CAPTION_SHAPES:
            raise ValueError(f"unknown pair ({colour!r}, {shape!r}) in exclude_pairs; colours: "
                             f"{', '.join(SHAPE_COLOURS)}; shapes: {', '.join(CAPTION_SHAPES)}")
    allowed = set(range(len(classes))) - {classes.index(pair_label(c, s)) for c, s in exclude_pairs}
    if not allowed:
        raise ValueError("exclude_pairs excludes every colour-shape pair; nothing is left to draw")
    samples = [_captioned_scene(seed, i, img_size, max_objects, allowed) for i in range(n)]
    return CaptionData(samples, "builtin:shapes" if max_objects == 1 else "builtin:shapes-pairs", classes)


def digit_captions(label: int, seed: int, index: int) -> tuple[str, ...]:
    """Three distinct phrasings of a digit, chosen from six templates by ``(seed, index)``."""
    if not 0 <= label <= 9:
        raise ValueError(f"digit label must be 0..9, got {label}")
    chosen = np.random.default_rng([seed, index]).choice(len(_DIGIT_TEMPLATES), 3, replace=False)
    return tuple(_article(_DIGIT_TEMPLATES[int(t)].format(d=label, w=DIGIT_WORDS[label])) for t in chosen)


def load_captioned_digits(n: int | None = None, seed: int = 0) -> CaptionData:
    """scikit-learn's digits (as ``builtin:digits`` reads them) with templated captions per image."""
    data = load_digits_data(n)
    samples = [CaptionedImage(s.source, digit_captions(s.label, seed, i), s.name, s.label)
               for i, s in enumerate(data.samples)]
    return CaptionData(samples, "builtin:digits", [f"the digit {w}" for w in DIGIT_WORDS])


Entry = tuple[str, Path | None, str, str, str | None]  # name, file, caption, where ("line 3"), problem or None


def _gather(entries: list[Entry], where: Path, strict: bool, what: str) -> CaptionData:
    """Group caption entries by file into samples, in first-seen order; an entry with a problem, an
    empty caption or a missing file is skipped as ``(name, "line 3: reason")`` or, if strict, raised."""
    grouped: dict[Path, tuple[str, list[str]]] = {}
    skipped: Skipped = []
    for name, file, caption, at, problem in entries:
        if problem is None and not caption:
            problem = "empty caption"
        elif problem is None and file is not None and file not in grouped and not file.is_file():
            problem = "file not found"
        if problem is not None or file is None:
            if strict:
                raise DataError(f"{where}: {at}: {problem}" + (f": {name}" if name else ""))
            skipped.append((name or f"{where.name} {at}", f"{at}: {problem}"))
            continue
        grouped.setdefault(file, (name, []))[1].append(caption)
    warn_skipped(skipped, what, where)
    if not grouped:
        raise DataError(f"{where}: no image with a usable caption ({len(entries)} entries, all skipped)")
    samples = [CaptionedImage(file, tuple(captions), name) for file, (name, captions) in grouped.items()]
    return CaptionData(samples, str(where), [], skipped)


def read_caption_csv(path: str | Path, strict: bool = False) -> CaptionData:
    """Read a CSV with the columns ``path`` (relative to the CSV's folder) and ``caption``; others are ignored.

    An image on several rows gets all their captions, in file order. A row with an empty path or
    caption, or whose file does not exist, is skipped as ``"line N: ..."`` (or raises with ``strict``).
    Images are not decoded here (sources are paths): a training run's loader reports unreadable ones.

    Raises:
        DataError: A missing or unreadable file, missing columns, no usable rows, or (strict) a bad row.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: captions CSV not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read captions CSV ({exc})") from exc
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if not set(CAPTION_HEADER) <= set(header):
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"{path}: expected the columns 'path' and 'caption', found '{found}'")
    at_path, at_caption = header.index("path"), header.index("caption")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        written = row[at_path].strip() if len(row) > at_path else ""
        caption = row[at_caption].strip() if len(row) > at_caption else ""
        file = path.parent / Path(written).expanduser() if written else None
        entries.append((written, file, caption, f"line {line}", None if written else "empty path"))
    return _gather(entries, path, strict, "bad row")


def read_coco_captions(path: str | Path, images: str | Path | None = None, strict: bool = False) -> CaptionData:
    """Read COCO captions: ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``).

    Files are looked up in ``images``, by default next to the JSON or in its sibling ``images/`` folder,
    whichever holds more of them (COCO ships the two side by side). Samples follow the JSON's image
    order; annotations of unknown images, empty captions and missing files are skipped (or raise with
    ``strict``); images without any caption are left out, as a split's file may list them.

    Raises:
        DataError: A missing or invalid JSON, a missing images folder, no usable image, or (strict) a bad record.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: COCO captions file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not (isinstance(content, dict) and isinstance(content.get("images"), list)
            and isinstance(content.get("annotations"), list)):
        raise DataError(f"{path}: not a COCO captions file (needs 'images' and 'annotations' lists)")
    files = {img.get("id"): str(img.get("file_name", "")) for img in content["images"] if isinstance(img, dict)}
    if images is None:
        folders = [path.parent, path.parent / "images"]
        root = max(folders, key=lambda f: (sum((f / n).is_file() for n in files.values() if n), f == path.parent))
    else:
        root = Path(images).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: images folder not found")
    by_image: dict[object, list[tuple[str, str]]] = {}
    entries = []
    for ann in content["annotations"]:
        ann = ann if isinstance(ann, dict) else {}
        record, image_id = f"annotation id {ann.get('id', '?')}", ann.get("image_id")
        caption = ann["caption"].strip() if isinstance(ann.get("caption"), str) else ""
        if not isinstance(image_id, int | str) or image_id not in files:
            entries.append(("", None, "", record, f"unknown image id {image_id!r}"))
        else:
            by_image.setdefault(image_id, []).append((record, caption))
    for image_id, name in files.items():
        for record, caption in by_image.get(image_id, []):
            entries.append((name, root / name if name else None, caption, record, None if name else "no file_name"))
    return _gather(entries, path, strict, "bad record")


_BUILTIN: dict[str, Callable[[int], CaptionData]] = {
    "shapes": lambda seed: make_captioned_shapes(2000, 32, seed),
    "shapes-pairs": lambda seed: make_captioned_shapes(2000, 32, seed, max_objects=2),
    "digits": lambda seed: load_captioned_digits(seed=seed),
}


def resolve_caption_data(spec: str, strict: bool = False, images: str | None = None, seed: int = 0) -> CaptionData:
    """Turn a user's data argument into caption data: ``builtin:NAME``, a ``.csv`` or COCO ``.json``
    path (``images``: its images folder; an error with anything else), or a folder of class sub-folders.
    ``strict`` raises on the first bad row or file; ``seed`` seeds the built-ins' scenes and captions.

    Raises:
        DataError: An unknown built-in (suggesting the close match) or a spec that is none of the above.
    """
    spec = str(spec)
    if spec.startswith("builtin:"):
        key = spec.removeprefix("builtin:").strip().lower()
        if key not in _BUILTIN:
            close = difflib.get_close_matches(key, list(_BUILTIN), n=1)
            hint = f"did you mean 'builtin:{close[0]}'? " if close else ""
            raise DataError(f"unknown built-in caption dataset '{spec}'; {hint}available: "
                            + ", ".join(f"builtin:{k}" for k in _BUILTIN))
        return _BUILTIN[key](seed)
    path = Path(spec).expanduser()
    if images is not None and path.suffix.lower() != ".json":
        raise DataError(f"{spec}: an images folder can only be given with a COCO captions .json")
    if path.suffix.lower() == ".csv":
        return read_caption_csv(path, strict)
    if path.suffix.lower() == ".json":
        return read_coco_captions(path, images, strict)
    if not path.is_dir():
        raise DataError(f"{spec}: not a caption dataset; use {_ACCEPTED}")
    data = resolve_classification_data(str(path), strict=strict)
    if not data.classes:
        raise DataError(f"{spec}: a folder needs class sub-folders to be captioned; use {_ACCEPTED}")
    classes = [_article(f"a photo of a {name.replace('_', ' ')}") for name in data.classes]
    samples = [CaptionedImage(s.source, (classes[s.label],), s.name, s.label) for s in data.samples]
    return CaptionData(samples, data.source, classes, list(data.skipped))


def write_caption_folder(data: CaptionData, out: str | Path) -> Path:
    """Write ``data`` as PNG files and a ``captions.csv`` (``path,caption``, one row per caption) in
    ``out``, the format :func:`read_caption_csv` reads; returns the CSV's path."""
    from PIL import Image

    from omnivis.data.decode import decode_tensor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in data.samples:
        name = f"{Path(sample.name).with_suffix('').as_posix().replace('/', '_')}.png"
        pixels = decode_tensor(sample.source, "RGB")
        grey = bool((pixels[0] == pixels[1]).all() and (pixels[1] == pixels[2]).all())
        Image.fromarray((pixels[0] if grey else pixels.permute(1, 2, 0)).numpy()).save(out / name)
        rows += [(name, caption) for caption in sample.captions]
    path = out / "captions.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CAPTION_HEADER)
        writer.writerows(rows)
    return path


def caption_index(samples: Sequence[CaptionedImage]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """What a text-conditioned training step looks captions up in.

    Returns:
        The K distinct captions in first-seen order; (N, M) the caption rows of each image, padded by
        repeating its first (so every entry of a row is one of that image's own captions); (N,) how
        many captions each image has.
    """
    texts = list(dict.fromkeys(c for s in samples for c in s.captions))
    at = {c: k for k, c in enumerate(texts)}
    width = max((len(s.captions) for s in samples), default=1)
    rows = [[at[s.captions[k if k < len(s.captions) else 0]] for k in range(width)] for s in samples]
    return texts, torch.tensor(rows, dtype=torch.long).reshape(len(samples), width), torch.tensor(
        [len(s.captions) for s in samples], dtype=torch.long)


def as_indexed_images(data: CaptionData) -> ClassificationData:
    """The images with each one's position as its "label": a text-conditioned training step looks the
    image's captions up by it (``caption_index``), through the same dataset and loaders as class data."""
    samples = [ImageSample(s.source, i, s.name) for i, s in enumerate(data.samples)]
    return ClassificationData(samples, [], data.source, list(data.skipped))

