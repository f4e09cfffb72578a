"""The predictor base: a bundle rebuilt for inference, batching, devices and image names, once.

A task's predictor only says how to build its model from the bundle header, how to turn a batch of
PIL images into model outputs, and how to present one image's answer; reading the bundle, checking
its task, moving the model, chunking the inputs with a progress bar and naming the images are here.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import torch
from PIL import Image
from rich.progress import track
from torch import nn

from omnivis.data.decode import decode_tensor
from omnivis.data.images import load_images
from omnivis.bundle import Bundle, load_bundle, load_bundle_weights
from omnivis.errors import BundleError, ConfigError

SPLITS = ("auto", "val", "all")


class Predictor:
    """Base of every task's predictor; subclasses set ``task``, ``noun`` and build ``self.model``.

    Attributes:
        bundle: the loaded bundle; ``config`` is its header (config.json).
        classes: the class names in the model's order.
        img_size, mode: the input size and PIL mode (``RGB`` or ``L``) the model was trained on.
    """

    task: ClassVar[str]
    noun: ClassVar[str] = "model"
    graph: nn.Module | None = None  # uint8 images -> outputs (``omnivis.deploy.graphs``); None: not exportable
    session = None  # an ``OnnxGraph`` that replaces ``graph`` after ``use_onnx``

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        if bundle.task != self.task:
            raise BundleError(f"{bundle.path}: is a '{bundle.task}' bundle, not a {self.noun}")
        self.bundle = bundle
        self.config: dict = bundle.config
        self.classes: list[str] = list(self.config.get("classes") or [])
        self.img_size = int(self.config["img_size"])
        self.mode = "RGB" if int(self.config.get("in_chans", 3)) == 3 else "L"
        self.device = device

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu"):
        return cls(load_bundle(path, task=cls.task), device=device)

    def use_onnx(self, path: str | Path, threads: int | None = None) -> None:
        """Run ``path`` (an ``omnivis export`` of this bundle) with onnxruntime instead of the torch graph;
        everything before and after the graph stays the same, so the answers keep their form."""
        if self.graph is None:
            raise BundleError(f"{self.bundle.path}: this '{self.task}' bundle has no ONNX backend yet (classify, "
                              "segment, face and detect have)")
        from omnivis.deploy.runtime import OnnxGraph

        self.session = OnnxGraph(path, channels=3 if self.mode == "RGB" else 1, size=self.img_size, threads=threads)

    def run_graph(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 (N, C, S, S) images -> the graph's outputs, from torch or from the ONNX file in use."""
        if self.session is not None:
            return self.session(images)
        with torch.inference_mode():
            return tuple(out.cpu() for out in self.graph(images.to(self.device)))

    def ready(self, model: nn.Module) -> nn.Module:
        """Load the bundle's weights into ``model`` (rebuilt from the header), eval mode, on the device."""
        load_bundle_weights(model, self.bundle)
        return model.eval().to(self.device)

    def batches(self, images: Sequence, batch_size: int, progress: bool = False, description: str = "predicting",
                mode: str | None = None, tensors: bool = False) -> Iterator[list[Image.Image] | list[torch.Tensor]]:
        """``images`` (paths, PIL images or arrays) as lists of at most ``batch_size`` PIL images, in order;
        with ``tensors``, (C, H, W) uint8 tensors from ``decode_tensor``, exactly what training decoded."""
        chunks = range(0, len(images), batch_size)
        if progress:
            chunks = track(chunks, description=description, total=len(chunks), transient=True)
        for start in chunks:
            part = images[start : start + batch_size]
            if tensors:
                yield [decode_tensor(item, mode or self.mode) for item in part]
            else:
                yield load_images(part, mode or self.mode)


def image_names(images: Sequence, names: Sequence[str] | None = None) -> list[str]:
    """What each result calls its image: the given names, a path as written, else ``image N``."""
    if names:
        return list(names)
    return [str(im) if isinstance(im, (str, Path)) else f"image {i}" for i, im in enumerate(images)]


def held_out_wanted(split: str, spec: str, trained_on: str | None) -> bool:
    """Whether an evaluation scores only the bundle's held-out split of ``spec``.

    ``val`` always, ``all`` never, ``auto`` when ``spec`` is the data the bundle was trained on (so
    a figure is never inflated by training images, and another folder is scored whole).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    return split == "val" or (split == "auto" and spec == trained_on)
