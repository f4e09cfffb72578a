"""Using a face bundle: ``FacePredictor`` (crops, batched embeddings, verification) and
``evaluate_face`` (verification ROC, EER, TAR at FAR, 10-fold accuracy, open-set identification,
figures per group, an HTML report) and ``calibrate_face`` (the threshold for a false-accept rate).

Every decision carries the threshold it used and the false-accept rate that threshold was chosen
for, so an answer can always be traced to a calibration.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from omnivis.bundle import WEIGHTS, Bundle, update_task_fields
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.decode import decode_tensor
from omnivis.data.faces import Pairs, all_pairs, balanced_pairs, read_pairs
from omnivis.data.readers import ClassificationData
from omnivis.data.transforms import build_eval_geometry
from omnivis.deploy.graphs import EmbeddingGraph
from omnivis.errors import BundleError, DataError
from omnivis.inference.base import Predictor, held_out_wanted, image_names
from omnivis.metrics.face import (
    identification_metrics,
    per_group,
    threshold_for_far,
    verification_metrics,
)
from omnivis.models.backbones import create_backbone
from omnivis.models.embedding import EmbeddingModel

TASK = "face"
CROP_POLICY = {"policy": "square", "whole_image": "centre square of the photo, resized",
               "detected": "square around the box centre, side max(w, h) * (1 + 2 * margin), zero-padded"}
DEFAULT_FAR = 1e-2
ALL_PAIRS_LIMIT = 60_000  # every pair up to this many (about 350 photos); LFW-style balanced draws above


def bundle_id(bundle_dir: str | Path) -> str:
    """What names a model for its galleries: the SHA-256 of its weights (16 hex digits); the same
    weights in another folder are the same model, retrained weights are another."""
    digest = hashlib.sha256()
    with open(Path(bundle_dir) / WEIGHTS, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the photo it was found in (x0, y0, x1, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float


def crop_face(image: torch.Tensor, box: Box | None, size: int, margin: float) -> torch.Tensor:
    """(C, H, W) uint8 photo -> (C, size, size) uint8 face, by the bundle's crop policy: the whole
    photo's centre square, or a square around ``box`` grown by ``margin`` on each side."""
    if box is None:
        return build_eval_geometry(size)(image).as_subclass(torch.Tensor)
    side = max(box.x1 - box.x0, box.y1 - box.y0) * (1 + 2 * margin)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    square = TF.crop(image, top, left, max(1, int(round(side))), max(1, int(round(side))))  # zero-pads outside
    return TF.resize(square, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


class FacePredictor(Predictor):
    """Rebuilds a face embedding model from its bundle: crops, embeds in batches, verifies pairs."""

    task = TASK
    noun = "face model"

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        cfg = self.config
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = self.ready(EmbeddingModel(backbone, int(cfg["embedding_size"])))
        self.crop_margin = float(cfg.get("crop", {}).get("margin", 0.2))
        self.flip_test = bool(cfg.get("flip_test", False))
        self.graph = EmbeddingGraph(self.model, cfg["mean"], cfg["std"], self.flip_test).eval().to(self.device)
        self.id = bundle_id(bundle.path)

    @property
    def threshold(self) -> dict:
        """``{"value", "far", "source"}``: the calibrated decision threshold (``omnivis face calibrate``)."""
        found = self.config.get("threshold")
        if not isinstance(found, dict) or "value" not in found:
            raise BundleError(f"{self.bundle.path}: has no calibrated threshold; run omnivis face calibrate "
                              f"{self.bundle.path} --data HELD_OUT_FACES")
        return found

    def setting(self) -> dict:
        """What an embedding depends on besides the weights: a gallery made under another setting
        cannot be compared with this model's queries (deepface's cache ignored this: its #1183)."""
        cfg = self.config
        return {"bundle_id": self.id, "embedding_size": int(cfg["embedding_size"]),
                "normalization": cfg.get("normalization"), "crop": cfg.get("crop"), "img_size": self.img_size,
                "in_chans": int(cfg["in_chans"]), "flip_test": self.flip_test}

    def crops(self, images: Sequence, boxes: Sequence[Box | None] | None = None) -> torch.Tensor:
        """Photos (paths, PIL images or arrays) and optional face boxes -> (N, C, S, S) uint8 faces."""
        boxes = boxes if boxes is not None else [None] * len(images)
        return torch.stack([crop_face(decode_tensor(im, self.mode), box, self.img_size, self.crop_margin)
                            for im, box in zip(images, boxes)])

    def embed_crops(self, faces: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) uint8 faces -> (N, D) unit embeddings, in one call of the graph (torch, or the
        ONNX file after ``use_onnx``). With the bundle's ``flip_test`` (insightface's "flip test") a
        face's embedding is the sum of its own and its mirror image's, normalized."""
        return self.run_graph(faces)[0].float()

    def prepare(self, images: Sequence) -> torch.Tensor:
        """Photos -> the graph's input, uint8 (N, C, S, S) (each photo used whole, as at enrolment)."""
        return self.crops(images)

    def embed(self, images: Sequence, boxes: Sequence[Box | None] | None = None, batch_size: int = 64,
              progress: bool = False) -> torch.Tensor:
        """Photos -> (N, D) unit embeddings, ``batch_size`` at a time."""
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        chunks = range(0, len(images), batch_size)
        if progress:
            from rich.progress import track

            chunks = track(chunks, description="embedding faces", total=len(chunks), transient=True)
        out = [self.embed_crops(self.crops(images[i:i + batch_size], boxes[i:i + batch_size])) for i in chunks]
        return torch.cat(out) if out else torch.empty(0, int(self.config["embedding_size"]))

    def decide(self, score: float) -> dict:
        """A score as a decision that names its threshold and the FAR it was calibrated for."""
        t = self.threshold
        return {"same": bool(score >= t["value"]), "score": round(float(score), 6), "threshold": t["value"],
                "far": t["far"]}

    def verify(self, first: Sequence, second: Sequence) -> list[dict]:
        """Pairs of photos (two lists of equal length) -> one decision each."""
        if len(first) != len(second):
            raise DataError(f"verify needs pairs: got {len(first)} first and {len(second)} second photos")
        n = len(first)
        return self.verify_pairs([*first, *second], range(n), range(n, 2 * n))  # one batched pass over both sides

    def verify_pairs(self, photos: Sequence, first: Sequence[int], second: Sequence[int]) -> list[dict]:
        """Pairs given as indices into ``photos`` (a pairs file names each photo once): every photo is
        embedded once, whatever the number of pairs it is in."""
        vectors = self.embed(list(photos))
        a, b = vectors[torch.as_tensor(list(first))], vectors[torch.as_tensor(list(second))]
        return [self.decide(s) for s in (a * b).sum(1).tolist()]

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        """``omnivis predict`` on a face bundle: each photo's embedding (the whole photo as the face)."""
        vectors = self.embed(list(images))
        return [{"image": n, "embedding": [round(v, 6) for v in vec], "summary": f"{len(vec)}-d embedding"}
                for n, vec in zip(image_names(images, names), vectors.tolist())]


@dataclass
class FaceEvalSet:
    """What a face evaluation scores: photos, their people (None for a pairs file) and the pairs."""

    sources: list
    people: list[str] | None
    pairs: Pairs
    source: str


def _eval_set(predictor: FacePredictor, data, split: str, strict: bool, images: str | None) -> FaceEvalSet:
    cfg = predictor.config
    if isinstance(data, (str, Path)) and str(data).lower().endswith(".txt"):
        root = Path(images) if images else Path(data).parent
        paths, pairs = read_pairs(data, root)
        return FaceEvalSet(paths, None, pairs, str(data))
    if not isinstance(data, ClassificationData):
        spec = str(data or cfg.get("data"))
        data = resolve_classification_data(spec, strict=strict)
        if held_out_wanted(split, spec, cfg.get("data")):
            held = set((cfg.get("split") or {}).get("test_identities") or [])
            keep = [i for i, s in enumerate(data.samples) if data.classes[s.label] in held]
            if not keep:
                raise DataError(f"{spec}: none of the bundle's held-out people are in it; pass --split all")
            data = data.subset(keep)
    labels = data.labels()
    n = len(labels)
    pairs = all_pairs(labels) if n * (n - 1) // 2 <= ALL_PAIRS_LIMIT else balanced_pairs(labels)
    return FaceEvalSet([s.source for s in data.samples],
                       [data.classes[i] for i in labels], pairs, data.source)


def open_set_split(people: Sequence[str], seed: int = 0, unknown_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices, probe indices): a seeded ``unknown_fraction`` of the people (at least one when
    there are 3 or more) are left out of the gallery; the others enrol their first half of photos
    (at least one) and probe with the rest."""
    names = sorted(set(people), key=list(people).index)
    count = int(round(unknown_fraction * len(names)))
    count = max(1, count) if len(names) >= 3 else 0
    unknown = set(np.random.default_rng(seed).permutation(names)[:count].tolist())
    gallery, probes = [], []
    for name in names:
        idx = [i for i, p in enumerate(people) if p == name]
        if name in unknown:
            probes += idx
        else:
            keep = max(1, len(idx) // 2)
            gallery += idx[:keep]
            probes += idx[keep:]
    return np.array(gallery, dtype=np.int64), np.array(probes, dtype=np.int64)


def read_groups(path: str | Path) -> dict[str, str]:
    """A CSV ``identity,group`` (header optional) -> identity -> group."""
    out: dict[str, str] = {}
    try:
        rows = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the groups file ({err})") from None
    for number, row in enumerate(rows, 1):
        if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["identity", "group"]):
            continue
        if len(row) < 2:
            raise DataError(f"{path}:{number}: expected 'identity,group', got {','.join(row)!r}")
        out[row[0].strip()] = row[1].strip()
    return out


def evaluate_face(
    bundle_dir: str | Path,
    data: str | ClassificationData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    images: str | None = None,
    groups: str | None = None,
    calibrate: bool = False,
    far: float = DEFAULT_FAR,
) -> dict:
    """Verification and identification figures of a face bundle, with pictures and an HTML report.

    Args:
        data: identity folder or ``builtin:`` set (every pair of its photos, or LFW-style balanced
            draws above ~350 photos), a ``pairs.txt`` file (LFW format; photos under ``images``),
            loaded data, or None: the bundle's held-out people.
        groups: a CSV ``identity,group``: every verification figure per group and the largest gap.
        calibrate: also store the threshold for ``far`` on these pairs in the bundle.
    """
    from omnivis.metrics.face_report import write_face_report
    from omnivis.metrics.fairness import plot_group_metrics

    predictor = FacePredictor.from_dir(bundle_dir)
    evalset = _eval_set(predictor, data, split, strict, images)
    embeddings = predictor.embed(evalset.sources, progress=progress)
    p = evalset.pairs
    scores = (embeddings[p.first] * embeddings[p.second]).sum(1).numpy().astype(np.float64)
    metrics: dict = {"data": evalset.source, "images": len(evalset.sources), **verification_metrics(scores, p.same, p.fold)}
    if calibrate:
        threshold = {"value": threshold_for_far(scores[~p.same], far), "far": far,
                     "source": f"{len(p.same) - int(p.same.sum())} impostor pairs of {evalset.source}"}
        update_task_fields(bundle_dir, {"threshold": threshold})
        predictor.config["threshold"] = threshold
    threshold = predictor.config.get("threshold") or {"value": threshold_for_far(scores[~p.same], far), "far": far,
                                                      "source": "these pairs (the bundle has none)"}
    metrics["threshold"], metrics["threshold_far"] = float(threshold["value"]), float(threshold["far"])
    accepted = scores >= threshold["value"]
    metrics["far_measured"] = float(accepted[~p.same].mean())
    metrics["tar_measured"] = float(accepted[p.same].mean())
    if evalset.people is not None:
        gallery, probes = open_set_split(evalset.people)
        if len(gallery) and len(probes):
            people = np.array(evalset.people)
            metrics.update(identification_metrics(embeddings[gallery], people[gallery].tolist(),
                                                   embeddings[probes], people[probes].tolist(), threshold["value"]))
    if groups is not None:
        if evalset.people is None:
            raise DataError("--groups needs identity-labelled data (a folder of people), not a pairs file")
        table = read_groups(groups)
        missing = sorted(set(evalset.people) - set(table))
        if missing:
            raise DataError(f"{groups}: no group for identity '{missing[0]}' ({len(missing)} missing)")
        group_of = np.array([table[name] for name in evalset.people])
        report = per_group(scores, p.same, group_of[p.first], group_of[p.second], p.fold)
        report = {"csv": str(groups), **report, "headline": ["auc", "eer", "tar_at_far_0.01"]}
        if out_dir is not None:
            report["png"] = str(plot_group_metrics(report, report["headline"], Path(out_dir) / "per_group.png"))
        metrics["per_group"] = report
    if out_dir is not None:
        metrics.update(write_face_report(Path(out_dir), evalset, scores, metrics))
    return metrics


def calibrate_face(bundle_dir: str | Path, data: str | None = None, far: float = DEFAULT_FAR, split: str = "auto",
                   images: str | None = None, progress: bool = True) -> dict:
    """Choose the threshold that accepts at most ``far`` of the impostor pairs of ``data`` and store it in
    the bundle; returns the threshold with the rates measured at it."""
    if not 0.0 < far < 1.0:
        raise DataError(f"far must be in (0, 1), got {far}")
    metrics = evaluate_face(bundle_dir, data=data, split=split, progress=progress, images=images, calibrate=True,
                            far=far)
    keys = ("threshold", "threshold_far", "far_measured", "tar_measured", "pairs", "genuine_pairs", "impostor_pairs",
            "data")
    return {k: metrics[k] for k in keys}
