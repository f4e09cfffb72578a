"""What each task explains: the model as float images -> one tensor, and the jobs (image, target) per batch.

An adapter wraps a task's predictor: it reuses its decoding and resizing (so a map is drawn on exactly
the pixels the prediction saw), states how the resize maps back to the image (``crop``: short side then
center crop, as classifiers; ``squash``: straight to S x S, as segmenters), and turns the model's own
prediction (or the user's ``--target``) into Grad-CAM targets: a class logit for classifiers, a
class's predicted pixels for segmenters and segmentation heads.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from omnivis.data.decode import decode_tensor
from omnivis.deploy.graphs import NormalizedInput
from omnivis.errors import BundleError, ConfigError
from omnivis.inference.explain import ClassPixels, ClassScore

EXPLAINABLE = ("classify", "segment", "multitask", "detect", "face")


class FloatModel(nn.Module):
    """float (N, C, S, S) images in [0, 255] -> the model's output, normalized inside as in training;
    ``key`` picks one head of a model that answers with a dict."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], key: str | None = None) -> None:
        super().__init__()
        self.normalize = NormalizedInput(mean, std)
        self.model = model
        self.key = key

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(self.normalize(images))
        return out[self.key] if self.key is not None else out


@dataclass
class Job:
    """One map to draw: which image of the batch, the Grad-CAM target, and what it stands for."""

    image: int
    target: Callable | None
    label: str
    score: float
    kind: str  # "class" (a classifier's class) or "pixels" (a segmenter's class, over its predicted pixels)
    extra: dict = field(default_factory=dict)


def class_index(name: str, classes: list[str]) -> int:
    """A ``--target`` class name (or index) -> its index; an unknown one names the choices."""
    if name in classes:
        return classes.index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    close = difflib.get_close_matches(name, classes, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
    raise ConfigError(f"--target '{name}' is not a class of this model; its classes are {shown}.{hint}")


class ExplainAdapter(ABC):
    """Base: ``model`` (float images in [0, 255] -> outputs, batch first), ``geometry`` and ``prepare``
    (images -> the uint8 (N, C, S, S) batch, the predictor's own); the Backbone inside the model is
    found by ``explain.find_backbone``, wherever the task's model keeps it."""

    model: nn.Module
    geometry = "crop"
    img_size: int
    mode: str
    classes: list[str]
    prepare: Callable[[Sequence[Image.Image]], torch.Tensor]

    @abstractmethod
    def jobs(self, batch: torch.Tensor, target: str | None, top_k: int) -> list[Job]:
        """The maps to draw for ``batch``: the model's own predictions, or those of ``target``."""


class ClassifierAdapter(ExplainAdapter):
    """A classifier (or a multitask model's class head): one map per image, for the predicted class or ``target``."""

    def __init__(self, predictor, model: FloatModel | None = None, classes: list[str] | None = None,
                 prepare: Callable | None = None, geometry: str = "crop") -> None:
        cfg = predictor.config
        self.model = model or FloatModel(predictor.model, cfg["mean"], cfg["std"]).eval()
        self.classes = classes if classes is not None else predictor.classes
        self.prepare = prepare or predictor.prepare
        self.geometry = geometry
        self.img_size, self.mode = predictor.img_size, predictor.mode

    def jobs(self, batch: torch.Tensor, target: str | None, top_k: int) -> list[Job]:
        with torch.no_grad():
            probs = self.model(batch.float()).float().softmax(dim=1).cpu()
        wanted = class_index(target, self.classes) if target is not None else None
        jobs = []
        for i, p in enumerate(probs):
            index = wanted if wanted is not None else int(p.argmax())
            jobs.append(Job(i, ClassScore(index), self.classes[index], float(p[index]), "class",
                            {"predicted": self.classes[int(p.argmax())], "predicted_score": float(p.max())}))
        return jobs


class SegmenterAdapter(ExplainAdapter):
    """A segmenter (or a multitask model's mask head): one map per predicted foreground class, largest
    first (at most ``top_k``), or for ``target`` alone; the target is the class's logits summed over
    the pixels predicted as that class (over the whole image when it predicts none)."""

    geometry = "squash"

    def __init__(self, predictor, model: FloatModel | None = None, classes: list[str] | None = None,
                 prepare: Callable | None = None) -> None:
        cfg = predictor.config
        self.model = model or FloatModel(predictor.model, cfg["mean"], cfg["std"]).eval()
        self.classes = classes if classes is not None else predictor.classes
        self.prepare = prepare or predictor.prepare
        self.img_size, self.mode = predictor.img_size, predictor.mode

    def jobs(self, batch: torch.Tensor, target: str | None, top_k: int) -> list[Job]:
        with torch.no_grad():
            probs = self.model(batch.float()).float().softmax(dim=1).cpu()
        predicted = probs.argmax(dim=1)
        background = self.classes.index("background") if "background" in self.classes else None
        wanted = class_index(target, self.classes) if target is not None else None
        jobs = []
        for i in range(len(batch)):
            areas = torch.bincount(predicted[i].flatten(), minlength=len(self.classes))
            if wanted is not None:
                chosen = [wanted]
            else:
                order = [int(c) for c in areas.argsort(descending=True) if areas[c] > 0 and int(c) != background]
                chosen = order[:top_k] or [int(areas.argmax())]
            for c in chosen:
                pixels = predicted[i] == c
                if not pixels.any():
                    pixels = torch.ones_like(pixels)
                score = float(probs[i, c][pixels].mean())
                jobs.append(Job(i, ClassPixels(c, pixels), self.classes[c], score, "pixels",
                                {"area": round(float(areas[c]) / predicted[i].numel(), 6)}))
        return jobs

class Similarity:
    """Grad-CAM target: the cosine similarity of a (D,) embedding to a fixed unit reference embedding."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.reference = reference

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return F.normalize(output, dim=0) @ self.reference.to(output.device)


class FaceAdapter(ExplainAdapter):
    """A face embedding model: the map of each photo shows the regions that drove its verification
    score against ``reference`` (a photo), i.e. the cosine similarity of their embeddings."""

    def __init__(self, predictor, reference) -> None:
        cfg = predictor.config
        self.predictor = predictor
        self.model = FloatModel(predictor.model, cfg["mean"], cfg["std"]).eval()
        self.classes, self.img_size, self.mode = [], predictor.img_size, predictor.mode
        self.reference = predictor.embed([reference])[0]
        self.reference_name = str(reference) if isinstance(reference, (str, Path)) else "the reference photo"
        self.prepare = predictor.prepare  # the whole photo's centre square, as at enrolment

    def jobs(self, batch: torch.Tensor, target: str | None, top_k: int) -> list[Job]:
        if target is not None:
            raise ConfigError("--target does not apply to face bundles: a face map explains the similarity to "
                              "the --compare photo")
        scores = (self.predictor.embed_crops(batch) @ self.reference).tolist()  # what face verify reports
        jobs = []
        for i, score in enumerate(scores):
            extra = {"compared_with": self.reference_name}
            if isinstance(self.predictor.config.get("threshold"), dict):
                extra.update(same=self.predictor.decide(score)["same"])
            jobs.append(Job(i, Similarity(self.reference), "similarity", float(score), "similarity", extra))
        return jobs


class DetectorInput(nn.Module):
    """float (N, 3, S, S) images in [0, 255] -> a torchvision detector's list of per-image outputs
    (it normalizes inside, from [0, 1] images)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> list[dict]:
        return self.detector(list(images / 255.0))


class BoxScore:
    """Grad-CAM target: the scores of the detections that are the explained box (same class, IoU >= 0.5)
    in one image's output; zero when the box is gone (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``)."""

    def __init__(self, box: torch.Tensor, label: int, iou: float = 0.5) -> None:
        self.box, self.label, self.iou = box, label, iou

    def __call__(self, output: dict) -> torch.Tensor:
        from torchvision.ops import box_iou

        if not len(output["boxes"]):
            return output["scores"].sum() * 0
        overlap = box_iou(self.box[None].to(output["boxes"].device), output["boxes"])[0]
        same = (overlap >= self.iou) & (output["labels"] == self.label)
        return (output["scores"] * same).sum()


class DetectorAdapter(ExplainAdapter):
    """A detector: one map per detected box (at most ``top_k`` per image, best first, at the bundle's
    score threshold), or per box of the ``target`` class; the target is that box's score."""

    geometry = "squash"

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.model = DetectorInput(predictor.model).eval()
        self.classes, self.img_size, self.mode = predictor.classes, predictor.img_size, "RGB"
        self.prepare = predictor.prepare

    def jobs(self, batch: torch.Tensor, target: str | None, top_k: int) -> list[Job]:
        wanted = class_index(target, self.classes) if target is not None else None
        with torch.no_grad():
            outputs = self.model(batch.float())
        jobs = []
        for i, out in enumerate(outputs):
            keep = (out["scores"] >= self.predictor.score_threshold) & (out["labels"] > 0)
            if wanted is not None:
                keep &= out["labels"] == wanted + 1
            order = [int(j) for j in torch.nonzero(keep).flatten()][:top_k]  # torchvision sorts by score
            for rank, j in enumerate(order):
                label = int(out["labels"][j])
                box = out["boxes"][j].detach()
                jobs.append(Job(i, BoxScore(box, label), self.classes[label - 1], float(out["scores"][j]), "box",
                                {"box_input": [round(float(v), 2) for v in box], "rank": rank}))
        return jobs


def adapter_for(predictor, head: str | None = None, compare=None) -> ExplainAdapter:
    """The adapter of a predictor's task; ``head`` picks a multitask bundle's classify or segment head,
    ``compare`` is the photo a face bundle's maps explain the similarity to."""
    task = predictor.task
    if head is not None and task != "multitask":
        raise ConfigError(f"--head applies to multitask bundles; this is a '{task}' bundle")
    if (compare is not None) != (task == "face"):
        raise ConfigError("--compare PHOTO applies to face bundles, which it needs: a face map explains the "
                          f"similarity to that photo; this is a '{task}' bundle")
    if task == "face":
        return FaceAdapter(predictor, compare)
    if task == "detect":
        return DetectorAdapter(predictor)
    if task == "classify":
        return ClassifierAdapter(predictor)
    if task == "segment":
        return SegmenterAdapter(predictor)
    if task == "multitask":
        heads = [t for t in predictor.tasks if t in ("classify", "segment")]
        head = head or (heads[0] if heads else None)
        if head not in heads:
            raise ConfigError(f"--head must be one of this bundle's explainable heads ({', '.join(heads) or 'none'}); "
                              f"got '{head}' (detection heads are not explained yet)")
        cfg = predictor.config
        model = FloatModel(predictor.model, cfg["mean"], cfg["std"], key=head).eval()
        resize = v2.Resize((predictor.img_size, predictor.img_size), antialias=True)

        def squash(images):
            return torch.stack([resize(decode_tensor(im, predictor.mode)).as_subclass(torch.Tensor) for im in images])

        if head == "classify":
            return ClassifierAdapter(predictor, model, predictor.classes, squash, geometry="squash")
        return SegmenterAdapter(predictor, model, predictor.seg_classes, squash)
    raise BundleError(f"{predictor.bundle.path}: explanations cover {', '.join(EXPLAINABLE)} bundles; this is a "
                      f"'{task}' bundle")


def image_point(x: float, y: float, size: tuple[int, int], img_size: int, geometry: str) -> tuple[float, float]:
    """A pixel (x, y) of the S x S model input -> the same point in the original (W, H) image.

    ``crop`` inverts torchvision's short-side ``Resize(S)`` + ``CenterCrop(S)`` (same rounding);
    ``squash`` inverts ``Resize((S, S))``. Pixel centres map to pixel centres.
    """
    width, height = size
    resized_w, resized_h, left, top = resized_frame(size, img_size, geometry)
    return ((x + left + 0.5) * width / resized_w - 0.5, (y + top + 0.5) * height / resized_h - 0.5)


def resized_frame(size: tuple[int, int], img_size: int, geometry: str) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop left, crop top) of the eval resize of a (W, H) image."""
    width, height = size
    if geometry == "squash":
        return img_size, img_size, 0, 0
    if width <= height:
        resized_w, resized_h = img_size, int(img_size * height / width)
    else:
        resized_w, resized_h = int(img_size * width / height), img_size
    return resized_w, resized_h, int(round((resized_w - img_size) / 2.0)), int(round((resized_h - img_size) / 2.0))


def map_on_image(cam: np.ndarray, size: tuple[int, int], geometry: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """An (S, S) map -> the (h, w) map over the part of the (W, H) image the model saw, and that part's
    (x0, y0, x1, y1) in the image (the whole image for ``squash``)."""
    img_size = cam.shape[0]
    width, height = size
    resized_w, resized_h, left, top = resized_frame(size, img_size, geometry)
    sx, sy = width / resized_w, height / resized_h
    box = (int(round(left * sx)), int(round(top * sy)), int(round((left + img_size) * sx)), int(round((top + img_size) * sy)))
    box = (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))
    w, h = max(1, box[2] - box[0]), max(1, box[3] - box[1])
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None], size=(h, w),
                            mode="bilinear", align_corners=False)[0, 0]
    return resized.numpy(), box
