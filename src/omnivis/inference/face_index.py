"""Face galleries: who is enrolled, as embeddings a model made, safe to load and hard to misuse.

An index is a folder with ``index.safetensors`` (the (N, D) unit embeddings, one row per enrolled
photo) and ``index.json`` (names, photos, the model's id and every setting an embedding depends on,
and the embeddings' SHA-256). Nothing is unpickled (deepface's pickled galleries can run code: its
#1569); an index made by another model or setting is refused naming both; a changed or truncated
file fails its checksum. Identification compares a face with each person's template (the mean of
their unit embeddings), so a person enrolled with one photo or with twenty counts once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from omnivis.data.readers import read_class_folder
from omnivis.errors import BundleError, DataError
from omnivis.fileio import atomic_write_bytes
from omnivis.inference.base import image_names
from omnivis.metrics.face import templates

INDEX_WEIGHTS = "index.safetensors"
INDEX_MANIFEST = "index.json"
INDEX_FORMAT = 1


def _checksum(embeddings: torch.Tensor, setting: dict, names: list, photos: list) -> str:
    """SHA-256 of the embeddings and of everything the manifest says about them (who, which photo,
    which model and setting): changing any of it, in either file, fails the check."""
    digest = hashlib.sha256(embeddings.float().contiguous().numpy().tobytes())
    digest.update(json.dumps([setting, names, photos], sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


@dataclass
class FaceIndex:
    """Enrolled faces. ``embeddings`` (N, D) float32 unit rows; ``names[i]`` and ``photos[i]`` say whose
    and which photo row i is; ``setting`` is the model's ``FacePredictor.setting()``."""

    embeddings: torch.Tensor
    names: list[str]
    photos: list[str]
    setting: dict
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _templates: tuple | None = field(default=None, repr=False)  # (T, D) unit templates and people, cached

    @property
    def people(self) -> list[str]:
        return sorted(set(self.names))

    def add(self, names: Sequence[str], photos: Sequence[str], embeddings: torch.Tensor, replace: bool = False) -> None:
        """Enrol more photos; a person already enrolled is an error unless ``replace`` (then their old
        photos are dropped), so two people who share a name are never merged by accident."""
        again = sorted(set(names) & set(self.names))
        if again and not replace:
            raise DataError(f"'{again[0]}' is already enrolled ({len(again)} people in both); use --replace to "
                            "re-enrol them, or rename the folder")
        keep = [i for i, n in enumerate(self.names) if n not in set(names)]
        self._templates = None
        self.embeddings = torch.cat([self.embeddings[keep], embeddings.float()])
        self.names = [self.names[i] for i in keep] + list(names)
        self.photos = [self.photos[i] for i in keep] + list(photos)

    def search(self, queries: torch.Tensor, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """(Q, D) unit queries -> per query the ``top_k`` people by cosine similarity to their template."""
        if not self.names:
            raise DataError("the index is empty; enrol people first")
        if top_k < 1:
            raise DataError(f"top_k must be >= 1, got {top_k}")
        if self._templates is None:
            self._templates = templates(self.embeddings, self.names)
        temps, people = self._templates
        top = (queries.float() @ temps.T).topk(min(top_k, len(people)), dim=1)
        return [[(people[j], float(s)) for j, s in zip(idx, val)]
                for idx, val in zip(top.indices.tolist(), top.values.tolist())]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        embeddings = self.embeddings.float().contiguous()
        atomic_write_bytes(folder / INDEX_WEIGHTS, save({"embeddings": embeddings}))
        manifest = {"format": INDEX_FORMAT, "setting": self.setting, "count": len(self.names),
                    "embedding_size": int(embeddings.shape[1]), "people": len(self.people),
                    "sha256": _checksum(embeddings, self.setting, self.names, self.photos), "names": self.names,
                    "photos": self.photos}
        atomic_write_bytes(folder / INDEX_MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        return folder


def new_index(setting: dict) -> FaceIndex:
    return FaceIndex(torch.empty(0, int(setting["embedding_size"])), [], [], dict(setting))


def load_index(folder: str | Path, setting: dict | None = None) -> FaceIndex:
    """Read an index; with ``setting`` (the model about to query it), refuse one made otherwise.

    Raises:
        BundleError: missing or unreadable files, a shape or checksum that does not match the
            manifest, or (with ``setting``) another model or setting, naming both.
    """
    folder = Path(folder)
    manifest_path, weights_path = folder / INDEX_MANIFEST, folder / INDEX_WEIGHTS
    for path in (manifest_path, weights_path):
        if not path.is_file():
            raise BundleError(f"{path}: missing; is {folder} a face index (omnivis face enroll)?")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        embeddings = load_file(str(weights_path))["embeddings"]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{manifest_path}: not valid JSON ({err})") from None
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise BundleError(f"{weights_path}: truncated or not a face index ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT or not isinstance(manifest.get("setting"), dict):
        raise BundleError(f"{manifest_path}: not a face index manifest of format {INDEX_FORMAT}")
    names, photos = manifest.get("names"), manifest.get("photos")
    expected = (manifest.get("count"), manifest.get("embedding_size"))
    if (embeddings.ndim != 2 or tuple(embeddings.shape) != expected or not isinstance(names, list)
            or not isinstance(photos, list) or len(names) != embeddings.shape[0] or len(photos) != len(names)):
        raise BundleError(f"{folder}: the embeddings' shape {tuple(embeddings.shape)} does not match the manifest "
                          f"({expected[0]} photos x {expected[1]}); the index was changed or truncated")
    if _checksum(embeddings, manifest["setting"], names, photos) != manifest.get("sha256"):
        raise BundleError(f"{folder}: checksum does not match {manifest_path}; the index was changed")
    index = FaceIndex(embeddings.float(), [str(n) for n in names], [str(p) for p in photos], manifest["setting"])
    if setting is not None:
        check_setting(index.setting, setting, folder)
    return index


def check_setting(stored: dict, current: dict, where: str | Path) -> None:
    """An index is only comparable with the model and setting that made it."""
    if stored.get("bundle_id") != current.get("bundle_id"):
        raise BundleError(f"{where}: was enrolled by model {stored.get('bundle_id')}, but this bundle is "
                          f"{current.get('bundle_id')}; enrol the gallery again with this model")
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            raise BundleError(f"{where}: was enrolled with {key}={json.dumps(stored.get(key))}, but this bundle "
                              f"uses {key}={json.dumps(current.get(key))}; enrol the gallery again")


def faces_in(images: Sequence, detector=None) -> list[list]:
    """Per photo, the face boxes to embed: every face the detector finds, in its order, or the whole
    photo (``[None]``) without a detector."""
    if detector is None:
        return [[None] for _ in images]
    return [list(found) for found in detector.detect(list(images))]


def enroll(predictor, gallery: str | Path, index: FaceIndex | None = None, replace: bool = False,
           detector=None, progress: bool = False) -> FaceIndex:
    """Embed a gallery (one sub-folder per person) into ``index`` (a new one if None).

    With a detector, each photo contributes its largest face; a photo without one is skipped and
    listed in ``index.skipped``. A person left with no photo is an error naming them.
    """
    data = read_class_folder(gallery)
    if not data.classes:
        raise DataError(f"{gallery}: no people found; a gallery has one sub-folder of photos per person")
    index = index if index is not None else new_index(predictor.setting())
    check_setting(index.setting, predictor.setting(), "the index")
    sources = [s.source for s in data.samples]
    boxes: list = [None] * len(sources)
    skipped = list(data.skipped)
    if detector is not None:
        keep = []
        for i, found in enumerate(faces_in(sources, detector)):
            if found:
                boxes[i] = max(found, key=lambda b: (b.x1 - b.x0) * (b.y1 - b.y0))
                keep.append(i)
            else:
                skipped.append((data.samples[i].name, "no face found"))
        sources, boxes = [sources[i] for i in keep], [boxes[i] for i in keep]
        samples = [data.samples[i] for i in keep]
    else:
        samples = data.samples
    names = [data.classes[s.label] for s in samples]
    empty = sorted(set(data.classes) - set(names))
    if empty:
        raise DataError(f"{gallery}/{empty[0]}: no usable photo of this person ({len(empty)} people without one)")
    embeddings = predictor.embed(sources, boxes, progress=progress)
    index.add(names, [s.name for s in samples], embeddings, replace=replace)
    index.skipped = skipped
    return index


def identify(predictor, index: FaceIndex, images: Sequence, top_k: int = 5, detector=None,
             names: Sequence[str] | None = None) -> list[dict]:
    """Per photo, every face (the detector's order, or the whole photo) named by its closest enrolled
    person, or ``unknown`` below the bundle's threshold; each answer carries the threshold and FAR."""
    check_setting(index.setting, predictor.setting(), "the index")
    threshold = predictor.threshold
    per_image = faces_in(images, detector)
    flat = [(i, box) for i, found in enumerate(per_image) for box in found]
    vectors = predictor.embed([images[i] for i, _ in flat], [b for _, b in flat]) if flat else None
    matches = index.search(vectors, top_k) if flat else []
    results = [{"image": n, "faces": []} for n in image_names(images, names)]
    for (i, box), top in zip(flat, matches):
        name, score = top[0]
        known = score >= threshold["value"]
        face = {"identity": name if known else "unknown", "score": round(score, 6), "threshold": threshold["value"],
                "far": threshold["far"], "top_k": [{"identity": n, "score": round(s, 6)} for n, s in top]}
        if box is not None:
            face["box"] = [round(float(v), 1) for v in (box.x0, box.y0, box.x1, box.y1)]
        results[i]["faces"].append(face)
    for result in results:
        found = result["faces"]
        result["summary"] = ", ".join(f["identity"] for f in found) if found else "no face found"
    return results
