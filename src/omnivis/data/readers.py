"""Readers for image-classification data: class folders and CSV manifests.

A dataset on disk is either a folder with one sub-folder per class (``root/cat/1.jpg``), a folder of
loose images (unlabeled, for prediction or self-supervised pretraining), or a CSV manifest with the
header ``path,label``. Every reader returns a :class:`ClassificationData`, the one in-memory form the
rest of omnivis consumes; built-in datasets produce the same type with in-memory arrays as sources.

Files that are not readable images are skipped (or, with ``strict=True``, raise), so one corrupt
JPEG does not cost a user their training run: each is kept in ``skipped`` with its reason and one
warning line names the first few (``omnivis.data.skipped``).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnivis.data.images import IMAGE_EXTENSIONS, check_image
from omnivis.data.skipped import Skipped, warn_skipped
from omnivis.errors import DataError

MANIFEST_HEADER: tuple[str, str] = ("path", "label")


@dataclass(frozen=True)
class ImageSample:
    """One image and its label.

    Attributes:
        source: A file, or an in-memory image (H x W or H x W x C uint8).
        label: Index into the dataset's classes, -1 when unlabeled.
        name: Display name (a path relative to the dataset root, or ``"digits/0001"``).
    """

    source: Path | np.ndarray
    label: int
    name: str


@dataclass
class ClassificationData:
    """Samples with their class names: what every classification-style task trains or predicts on.

    Attributes:
        samples: The images, in a deterministic order.
        classes: Class names; a sample's label indexes this list. Empty for unlabeled data.
        source: What the user passed (``"builtin:digits"`` or a folder path), for reports.
        skipped: ``(file, reason)`` for every file left out (unreadable, or missing from a manifest),
            named as the samples are; see ``omnivis.data.skipped``.
    """

    samples: list[ImageSample]
    classes: list[str]
    source: str
    skipped: Skipped = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> np.ndarray:
        """All labels as an int64 array of shape (N,), for splitting and class counts."""
        return np.array([sample.label for sample in self.samples], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ClassificationData:
        """The selected samples with the same classes, so label indices stay meaningful."""
        chosen = [self.samples[int(i)] for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        return ClassificationData(chosen, list(self.classes), self.source, list(self.skipped))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), in sorted path order."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        found.extend(Path(current) / f for f in files if _is_image_name(f))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _class_index(name: str, classes: list[str], where: str) -> int:
    try:
        return classes.index(name)
    except ValueError:
        known = ", ".join(classes) if classes else "(none)"
        raise DataError(f"{where}: unknown class {name!r}; the known classes are: {known}") from None


def _display_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _accept(
    candidates: list[tuple[Path, int, str]], strict: bool, skipped: list[tuple[str, str]]
) -> list[ImageSample]:
    """Check each candidate file; keep readable ones, record (or, in strict mode, raise on) the rest."""
    samples = []
    for path, label, name in candidates:
        reason = check_image(path)
        if reason is not None:
            if strict:
                raise DataError(f"{path}: {reason}")
            skipped.append((name, reason))
            continue
        samples.append(ImageSample(source=path, label=label, name=name))
    return samples


def _read_folder(root: Path, strict: bool, classes: list[str] | None) -> ClassificationData:
    entries = list(root.iterdir())
    class_dirs = sorted((p for p in entries if p.is_dir() and not _is_hidden(p.name)), key=lambda p: p.name)
    loose = sorted((p for p in entries if p.is_file() and _is_image_name(p.name)), key=lambda p: p.name)
    per_class = {d.name: _find_images(d) for d in class_dirs}
    candidates: list[tuple[Path, int, str]] = []
    if not any(per_class.values()):
        # No class folders with images: an unlabeled collection (prediction, pretraining).
        found_classes = list(classes) if classes is not None else []
        candidates = [(p, -1, p.name) for p in loose]
    else:
        if classes is None:
            empty = [name for name, files in per_class.items() if not files]
            if empty:
                warnings.warn(
                    f"ignored {len(empty)} class folder(s) with no images in {root}: {', '.join(empty)}",
                    UserWarning,
                    stacklevel=3,
                )
            found_classes = [name for name, files in per_class.items() if files]
        else:
            found_classes = list(classes)
        for name, files in per_class.items():
            if not files:
                continue
            label = _class_index(name, found_classes, str(root / name))
            candidates.extend((f, label, _display_name(f, root)) for f in files)
        if loose:
            warnings.warn(
                f"ignored {len(loose)} image(s) directly in {root} that are not in a class folder",
                UserWarning,
                stacklevel=3,
            )
    if not candidates:
        raise DataError(
            f"{root}: no images found (expected files ending in {', '.join(IMAGE_EXTENSIONS)}, "
            "in one sub-folder per class or directly in the folder)"
        )
    skipped: list[tuple[str, str]] = []
    samples = _accept(candidates, strict, skipped)
    warn_skipped(skipped, "unreadable image", root)
    if not samples:
        raise DataError(f"{root}: none of the {len(candidates)} image files could be read")
    return ClassificationData(samples, found_classes, str(root), skipped)


def _read_manifest(manifest: Path, strict: bool, classes: list[str] | None) -> ClassificationData:
    base = manifest.parent
    expected = ",".join(MANIFEST_HEADER)
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest}: cannot read manifest ({exc})") from exc
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if tuple(header[:2]) != MANIFEST_HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"{manifest}: expected the header '{expected}', found '{found}'")
    entries: list[tuple[int, str, str]] = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{manifest}:{line_number}: expected '{expected}', found '{','.join(row)}'")
        entries.append((line_number, row[0].strip(), row[1].strip()))
    if not entries:
        raise DataError(f"{manifest}: manifest lists no images")
    found_classes = list(classes) if classes is not None else sorted({label for _, _, label in entries})
    skipped: list[tuple[str, str]] = []
    candidates: list[tuple[Path, int, str]] = []
    for line_number, written, label_name in entries:
        label = _class_index(label_name, found_classes, f"{manifest}:{line_number}")
        path = Path(written).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            if strict:
                raise DataError(f"{manifest}:{line_number}: file not found: {written}")
            skipped.append((written, f"line {line_number}: file not found"))
            continue
        candidates.append((path, label, written))
    samples = _accept(candidates, strict, skipped)
    warn_skipped(skipped, "unreadable image", manifest)
    if not samples:
        raise DataError(f"{manifest}: none of the {len(entries)} listed images could be read")
    return ClassificationData(samples, found_classes, str(manifest), skipped)


def read_class_folder(
    root: str | Path,
    manifest: str | Path | None = None,
    strict: bool = False,
    classes: list[str] | None = None,
) -> ClassificationData:
    """Read a classification dataset from a folder of class sub-folders or from a CSV manifest.

    Without a manifest, each immediate, non-hidden sub-folder of ``root`` is a class (sorted by
    name) and holds its images at any depth; a folder without sub-folders is read as unlabeled
    (labels -1, no classes). With a manifest (header ``path,label``; paths relative to the
    manifest's folder or absolute), the classes are the sorted unique labels. A relative manifest
    that does not exist as given is looked up inside ``root``; ``root`` may itself be a ``.csv``.

    Args:
        root: The dataset folder.
        manifest: Optional CSV manifest listing files and labels.
        strict: Raise on the first unreadable or missing file instead of skipping it with a warning.
        classes: Fixed class list (for example a trained model's); labels index into it and a class
            it lacks is an error.

    Returns:
        The samples in a deterministic order, with ``skipped`` listing files left out.

    Raises:
        DataError: Missing root, no images, a bad manifest, an unknown class, or (strict) a bad file.
    """
    root = Path(root).expanduser()
    if manifest is None and root.is_file() and root.suffix.lower() == ".csv":
        manifest, root = root, root.parent
    if not root.exists():
        raise DataError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a folder of class sub-folders or images)")
    if manifest is not None:
        manifest_path = Path(manifest).expanduser()
        inside_root = root / manifest_path
        if not manifest_path.is_absolute() and not manifest_path.exists() and inside_root.exists():
            manifest_path = inside_root
        if not manifest_path.is_file():
            raise DataError(f"{manifest_path}: manifest file not found")
        return _read_manifest(manifest_path, strict, classes)
    return _read_folder(root, strict, classes)
