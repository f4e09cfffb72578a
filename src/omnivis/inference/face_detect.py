"""Finding and hiding faces: a classical Haar cascade or a trained detect bundle, one answer type.

``HaarFaceDetector`` (OpenCV's frontal-face cascade) needs no training and no bundle;
``BundleFaceDetector`` wraps any detect bundle with a ``face`` class (train one on
``omnivis face scenes``). Both take images as paths, PIL images or arrays, decode them the one omnivis
way (``omnivis.data.images``: EXIF applied, transparency on white) and return, per image, a list of
:class:`FaceBox` in original image pixels, ordered left to right by box centre, then top to bottom,
so the same photo always lists its faces in the same reading order. ``anonymize`` hides the boxes
(blur or pixelate); ``draw_faces`` draws them with their scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from omnivis.data.images import load_images
from omnivis.errors import BundleError, ConfigError, ImageError

CLASSICAL = "classical"
FACE_CLASS = "face"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
MAX_UPSCALED_PIXELS = 4_000_000  # the enlargement for small images never makes more pixels than this
METHODS: tuple[str, ...] = ("blur", "pixelate")
PIXELATE_BLOCKS = 8  # blocks across a box's longer side: eyes and mouth fall into one or two blocks
BLUR_SIGMA_FRACTION = 0.15  # Gaussian sigma as a fraction of the box's longer side (15 px on a 100 px face)
_WANTED = f"a face detector is '{CLASSICAL}' (OpenCV's Haar cascade) or a detect bundle with a '{FACE_CLASS}' class"
_MIN_DRAW_SIDE = 256  # small images are drawn enlarged (nearest) so the scores can be read, as in DetectPredictor


@dataclass(frozen=True)
class FaceBox:
    """One face: ``x0, y0, x1, y1`` in pixels of the original image (pixel-edge coordinates) and a
    score whose meaning depends on the detector (see each detector's ``detect``)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def box(self) -> list[float]:
        """``[x0, y0, x1, y1]``."""
        return [self.x0, self.y0, self.x1, self.y1]

    def to_dict(self) -> dict:
        """JSON-ready ``{"box": [x0, y0, x1, y1], "score"}``, rounded for reading."""
        return {"box": [round(v, 2) for v in self.box], "score": round(self.score, 4)}


def reading_order(faces: Sequence[FaceBox]) -> list[FaceBox]:
    """Faces left to right by box centre, then top to bottom (the documented order of every detector)."""
    return sorted(faces, key=lambda f: ((f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2))


class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal-face cascade (``haarcascade_frontalface_default.xml``).

    Classical and fast, with no training: it finds upright, roughly frontal faces and misses profiles.
    The cascade's window is 24 x 24 px, so a face smaller than that cannot be found at the image's own
    size; images whose shorter side is under ``upscale_to`` are enlarged (bicubic) before the search
    and the boxes mapped back.

    Args:
        scale_factor: step between the image pyramid's scales (OpenCV's ``scaleFactor``).
        min_neighbors: overlapping raw hits a face needs to be reported (OpenCV's ``minNeighbors``;
            higher: fewer false alarms, more misses).
        upscale_to: enlarge smaller images to this shorter side first (0: never).
        min_score: drop faces whose score (below) is under this; None keeps all.
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, upscale_to: int = 256,
                 min_score: float | None = None) -> None:
        if scale_factor <= 1.0 or min_neighbors < 0 or upscale_to < 0:
            raise ConfigError(f"Haar cascade: need scale_factor > 1, min_neighbors >= 0 and upscale_to >= 0, got "
                              f"{scale_factor}, {min_neighbors}, {upscale_to}")
        try:
            import cv2
        except ImportError:
            raise ConfigError("the classical face detector needs OpenCV: pip install 'opencv-python-headless<5'") from None
        path = Path(cv2.data.haarcascades) / HAAR_CASCADE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():  # OpenCV 5 wheels no longer ship the cascades
            raise ConfigError(f"{path}: OpenCV's Haar cascade is missing; pip install 'opencv-python-headless<5'")
        self.scale_factor, self.min_neighbors, self.upscale_to = scale_factor, min_neighbors, upscale_to
        self.min_score = min_score

    def detect_one(self, grey: np.ndarray) -> list[FaceBox]:
        """One H x W uint8 grey image -> its faces in reading order."""
        import cv2

        height, width = grey.shape
        scale = max(1.0, self.upscale_to / min(height, width)) if self.upscale_to else 1.0
        # a thin image (8 x 500,000 px) would be enlarged to gigabytes: cap the enlarged image's pixels
        scale = min(scale, max(1.0, (MAX_UPSCALED_PIXELS / (height * width)) ** 0.5))
        if scale > 1.0:
            grey = cv2.resize(grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)
        rects, _levels, weights = self.cascade.detectMultiScale3(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, outputRejectLevels=True
        )
        faces = []
        for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            if self.min_score is not None and weight < self.min_score:
                continue
            faces.append(FaceBox(
                float(x / scale), float(y / scale), float(min(width, (x + w) / scale)),
                float(min(height, (y + h) / scale)), float(weight),
            ))
        return reading_order(faces)

    def detect(self, images: Sequence) -> list[list[FaceBox]]:
        """Images (paths, PIL images or arrays) -> per image, its faces in reading order.

        The score is the cascade's level weight (``detectMultiScale3`` with ``outputRejectLevels``):
        the sum of the last stage's weak-classifier votes, the largest among the windows merged into
        the face. Higher means more face-like; it is not a probability and has no upper bound (faces
        in the generated scenes score about 3 to 10, the astronaut 5.8, the false alarms on
        scikit-image's ``coins`` and ``cell`` 0.2 to 3.5). It ranks faces for mAP and ``min_score``.
        """
        return [self.detect_one(np.asarray(im)) for im in load_images(images, "L")]


class BundleFaceDetector:
    """A detect bundle used as a face detector: its boxes of class ``face`` scoring >= ``min_score``.

    Args:
        bundle: a detect bundle folder whose classes include ``face`` (other classes are ignored).
        min_score: lowest score kept (the detector's class probability for ``face``, 0..1).
        device: torch device of the model.
    """

    def __init__(self, bundle: str | Path, min_score: float = 0.5, device: str = "cpu") -> None:
        from omnivis.bundle import load_bundle
        from omnivis.inference.detect import DetectPredictor

        if not 0.0 <= min_score <= 1.0:
            raise ConfigError(f"min_score must be in [0, 1] for a detect bundle, got {min_score}")
        try:
            loaded = load_bundle(bundle)
        except BundleError as err:
            raise BundleError(f"{err}; {_WANTED}") from None
        classes = list(loaded.config.get("classes") or [])
        if loaded.task != "detect" or FACE_CLASS not in classes:
            what = f"a '{loaded.task}' bundle" if loaded.task != "detect" else f"a detector of {', '.join(classes)}"
            raise BundleError(f"{bundle}: is {what}; {_WANTED}")
        self.predictor = DetectPredictor(loaded, device=device)
        self.face_index = classes.index(FACE_CLASS)
        self.min_score = min_score

    def detect(self, images: Sequence, batch_size: int = 16) -> list[list[FaceBox]]:
        """Images (paths, PIL images or arrays) -> per image, its faces in reading order; the score
        is the detector's probability for ``face``."""
        results = []
        for pred in self.predictor.detect(list(images), batch_size=batch_size):
            keep = (pred["labels"] == self.face_index) & (pred["scores"] >= self.min_score)
            boxes, scores = pred["boxes"][keep].tolist(), pred["scores"][keep].tolist()
            results.append(reading_order([FaceBox(*map(float, b), float(s)) for b, s in zip(boxes, scores)]))
        return results


FaceDetector = HaarFaceDetector | BundleFaceDetector


def load_face_detector(spec: str | Path, min_score: float = 0.5) -> FaceDetector:
    """``classical`` -> :class:`HaarFaceDetector` (``min_score`` does not apply: the cascade's own
    ``min_neighbors`` decides); anything else is a detect bundle folder with a ``face`` class.

    Raises:
        BundleError: ``spec`` is neither ``classical`` nor such a bundle (one line naming it).
    """
    if str(spec).strip().lower() == CLASSICAL:
        return HaarFaceDetector()
    path = Path(spec)
    if not path.is_dir():
        raise BundleError(f"{spec}: not a bundle folder; {_WANTED}")
    if not (path / "config.json").is_file():
        raise BundleError(f"{spec}: not a bundle folder (no config.json); {_WANTED}")
    return BundleFaceDetector(path, min_score=min_score)


def _pixel_box(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A float box -> the integer pixel region it touches, clipped to the image; None if empty."""
    x0, y0, x1, y1 = (box.box if isinstance(box, FaceBox) else [float(v) for v in box])
    x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    x1, y1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def anonymize(image: np.ndarray, boxes: Sequence, method: Literal["blur", "pixelate"] = "blur") -> np.ndarray:
    """A copy of ``image`` with every box hidden; pixels outside the boxes are unchanged.

    ``blur``: a Gaussian with sigma 15% of the box's longer side (eyes, mouth and their spacing are
    gone; only a skin-coloured smudge is left), computed on the box with a margin of the image
    around it so the box's edges are not darkened by padding. ``pixelate``: the box cut into square
    blocks, ~8 across its longer side, each filled with its mean colour.

    Args:
        image: H x W x 3 or H x W uint8.
        boxes: ``FaceBox`` objects or ``[x0, y0, x1, y1]`` sequences, in pixels of ``image``.
        method: ``blur`` or ``pixelate``.
    """
    if method not in METHODS:
        raise ConfigError(f"anonymize: method must be blur or pixelate, got '{method}'")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ImageError(f"anonymize: expected an H x W or H x W x C uint8 image, got {array.dtype} of shape "
                         f"{array.shape}")
    out = array.copy()
    height, width = out.shape[:2]
    for box in boxes:
        region = _pixel_box(box, width, height)
        if region is None:
            continue
        x0, y0, x1, y1 = region
        side = max(x1 - x0, y1 - y0)
        if method == "pixelate":
            block = max(1, math.ceil(side / PIXELATE_BLOCKS))
            for by in range(y0, y1, block):
                for bx in range(x0, x1, block):
                    tile = out[by : min(by + block, y1), bx : min(bx + block, x1)]
                    tile[...] = np.round(tile.reshape(-1, *tile.shape[2:]).mean(axis=0)).astype(np.uint8)
            continue
        sigma = max(1.0, BLUR_SIGMA_FRACTION * side)
        margin = math.ceil(3 * sigma)
        cx0, cy0, cx1, cy1 = max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)
        context = Image.fromarray(np.ascontiguousarray(out[cy0:cy1, cx0:cx1]))
        blurred = np.asarray(context.filter(ImageFilter.GaussianBlur(radius=sigma)))
        out[y0:y1, x0:x1] = blurred[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at ``size`` px (no font file needed); Pillow < 10.1 has one size only."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def draw_faces(image: np.ndarray | Image.Image, boxes: Sequence[FaceBox], color: str = "#e6194b") -> Image.Image:
    """``image`` (RGB) with each face's box and score drawn; images under 256 px are enlarged by a
    whole factor (nearest neighbour) first so the scores can be read."""
    canvas = (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).convert("RGB")
    scale = max(1, math.ceil(_MIN_DRAW_SIDE / min(canvas.size)))
    if scale > 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 256))
    font = _font(max(10, min(canvas.size) // 40))
    for face in boxes:
        x0, y0, x1, y1 = (v * scale for v in face.box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
        label = f"{face.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        ty = y0 - (bottom - top) - 3 if y0 >= (bottom - top) + 3 else y0 + width
        draw.rectangle([x0, ty, x0 + (right - left) + 3, ty + (bottom - top) + 3], fill=color)
        draw.text((x0 + 2 - left, ty + 1 - top), label, fill="white", font=font)
    return canvas
