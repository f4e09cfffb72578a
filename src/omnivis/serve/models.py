"""A bundle as a served model: its predictor (the code ``omnivis predict`` runs) and one batch function.

Three kinds of work reach a model through its batcher: an uploaded image for the task's JSON answer
(``ImageItem``), raw uint8 tensors for the KServe v2 tensor interface (``TensorItem``), and a
generation request (``GenerateItem``). ``run_batch`` groups what can share a model call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omnivis.bundle import load_bundle
from omnivis.errors import BundleError, ConfigError, OmnivisError
from omnivis.serve.api_errors import ApiError

V2_DATATYPES = {torch.float32: "FP32", torch.float16: "FP16", torch.int64: "INT64", torch.int32: "INT32",
                torch.uint8: "UINT8", torch.bool: "BOOL"}


@dataclass
class ImageItem:
    image: Image.Image
    top_k: int = 5
    mask: bool = False


@dataclass
class TensorItem:
    images: torch.Tensor  # uint8 (N, C, S, S)


@dataclass
class GenerateItem:
    """A generation request: ``class_`` for a class-conditional generator, ``prompt`` for a text-conditioned one."""

    n: int
    class_: str | None = None
    prompt: str | None = None
    steps: int | None = None
    seed: int = 0
    guidance: float | None = None


@dataclass
class FaceItem:
    """A face request: ``identify`` one photo against the model's gallery, or ``verify`` two photos."""

    kind: str
    images: list[Image.Image]
    top_k: int = 5


@dataclass
class EditItem:
    """An edit request: the photo, and for inpainting the holes (H, W bool) or a box (x, y, w, h), for
    style transfer the style image."""

    image: Image.Image
    mask: np.ndarray | Image.Image | None = None
    box: tuple[int, int, int, int] | None = None
    strength: float = 1.0
    style: Image.Image | None = None


@dataclass
class ImageAnswer:
    result: dict
    mask: np.ndarray | None = None  # segment and multitask: the class map at the image's own size


class ServedModel:
    """One loaded bundle under its name; ``backend`` is ``torch`` or ``onnx`` (the bundle's export)."""

    def __init__(self, name: str, bundle_dir: str | Path, backend: str = "torch", onnx: str | Path | None = None,
                 face_index: str | Path | None = None, face_detector=None) -> None:
        from omnivis.tasks.registry import get_task

        self.name, self.bundle_dir = name, Path(bundle_dir)
        self.task = load_bundle(bundle_dir).task
        if self.task == "generate":
            from omnivis.tasks.generate.sample import GeneratorPredictor

            self.predictor = GeneratorPredictor.from_dir(bundle_dir)
        else:
            self.predictor = get_task(self.task).predictor(bundle_dir)
        self.backend = "torch"
        self.note = ""
        if backend == "onnx":
            if getattr(self.predictor, "graph", None) is None:
                self.note = f"{self.task} bundles have no ONNX graph yet; '{name}' runs on torch"
            else:
                path = Path(onnx) if onnx else self.bundle_dir / "model.onnx"
                if not path.is_file():
                    raise BundleError(f"{path}: no ONNX file for model '{name}'; make it with: omnivis export "
                                      f"{self.bundle_dir}")
                self.predictor.use_onnx(path, threads=torch.get_num_threads())  # as many as torch: --threads
                self.backend = "onnx"
        elif backend != "torch":
            raise ConfigError(f"--backend must be torch or onnx, got '{backend}'")
        self.tensor_outputs = self._tensor_outputs()
        self.face_index, self.face_detector = None, face_detector
        if face_index is not None:
            if self.task != "face":
                raise ConfigError(f"--face-index {name}=...: model '{name}' is a {self.task} model, not a face model")
            from omnivis.inference.face_index import load_index

            self.face_index = load_index(face_index, self.predictor.setting())

    @property
    def graph(self):
        return getattr(self.predictor, "graph", None)

    @property
    def batched_graph(self) -> bool:
        return self.graph is not None and getattr(self.graph, "batched", True)

    @property
    def input_shape(self) -> list[int]:
        channels = 3 if self.predictor.mode == "RGB" else 1
        size = self.predictor.img_size
        return [-1 if self.batched_graph else 1, channels, size, size]

    def _tensor_outputs(self) -> list[dict]:
        """The graph's outputs (name, datatype, shape) for KServe v2 metadata, from one run on a blank image."""
        if self.graph is None:
            return []
        blank = torch.zeros([1] + self.input_shape[1:], dtype=torch.uint8)
        outputs = self.predictor.run_graph(blank)
        return [{"name": name, "datatype": V2_DATATYPES.get(out.dtype, "FP32"), "shape": [-1] + list(out.shape[1:])}
                for name, out in zip(self.graph.output_names, outputs)]

    def describe(self) -> dict:
        """What a client (and the web page) needs to know to call this model."""
        p = self.predictor
        info: dict[str, Any] = {"name": self.name, "task": self.task, "backend": self.backend, "note": self.note,
                                "bundle": str(self.bundle_dir), "img_size": p.img_size,
                                "classes": list(getattr(p, "classes", []))}
        if self.task == "generate":
            info.update(method=p.method, conditional=p.conditional, channels=p.channels,
                        default_steps=int(p.config.get("sampling", {}).get("steps", 50)),
                        text=p.text, example_prompts=list(p.example_prompts))
        else:
            info["channels"] = 3 if p.mode == "RGB" else 1
        if self.task == "multitask":
            info.update(tasks=list(p.tasks), seg_classes=p.seg_classes, det_classes=p.det_classes)
        if self.task == "segment":
            info["seg_classes"] = list(p.classes)
        if self.task == "edit":
            info.update(op=p.op, scale=p.scale, tile=p.tile)
        if self.task == "face":
            info.update(threshold=p.config.get("threshold"), embedding_size=int(p.config["embedding_size"]),
                        gallery_people=len(self.face_index.people) if self.face_index is not None else 0)
        return info

    # --- the batch function: runs in the model's thread --------------------------------------------
    def run_batch(self, items: list) -> list:
        results: list = [None] * len(items)
        groups: dict[Any, list[int]] = {}
        for i, item in enumerate(items):
            key = (("image", item.top_k) if isinstance(item, ImageItem) else ("face", item.kind, item.top_k)
                   if isinstance(item, FaceItem) else type(item).__name__)
            groups.setdefault(key, []).append(i)
        for key, idx in groups.items():
            try:
                kind = type(items[idx[0]])
                if kind is ImageItem:
                    answers = self._answer_images([items[i] for i in idx])
                elif kind is TensorItem:
                    answers = self._run_tensors([items[i] for i in idx])
                elif kind is FaceItem:
                    answers = self._answer_faces([items[i] for i in idx])
                elif kind is EditItem:  # one photo at a time: each is already cut into batched tiles
                    answers = [self._edit(items[i]) for i in idx]
                else:
                    answers = self._generate_group([items[i] for i in idx])
            except OmnivisError as exc:
                answers = [ApiError(422, str(exc))] * len(idx)
            except ApiError as exc:
                answers = [exc] * len(idx)
            except Exception as exc:  # a bug: only this group's requests fail, the rest of the batch is answered
                logging.getLogger("omnivis.serve").exception("model '%s'", self.name)
                answers = [ApiError(500, f"internal error ({type(exc).__name__}); see the server log")] * len(idx)
            for i, answer in zip(idx, answers):
                results[i] = answer
        return results

    def _answer_images(self, items: list[ImageItem]) -> list[ImageAnswer]:
        if self.task == "generate":
            raise ApiError(400, f"model '{self.name}' generates images; it does not take one")
        names = [f"#{i}" for i in range(len(items))]
        results = self.predictor.predict([item.image for item in items], top_k=items[0].top_k, names=names)
        masks = getattr(self.predictor, "_last", {})
        return [ImageAnswer(result, masks.get(name) if item.mask else None)
                for name, result, item in zip(names, results, items)]

    def _answer_faces(self, items: list[FaceItem]) -> list[dict]:
        """Every request of the group in one embedding call (verify: both photos of every pair). The face
        routes queue these only for a face model with a threshold (and, to identify, a gallery)."""
        if items[0].kind == "verify":
            return self.predictor.verify([item.images[0] for item in items], [item.images[1] for item in items])
        from omnivis.inference.face_index import identify

        results = identify(self.predictor, self.face_index, [item.images[0] for item in items], top_k=items[0].top_k,
                           detector=self.face_detector, names=[f"#{i}" for i in range(len(items))])
        return [{"faces": r["faces"], "summary": r["summary"]} for r in results]

    def _run_tensors(self, items: list[TensorItem]) -> list[list[torch.Tensor]]:
        if self.graph is None:
            raise ApiError(400, f"model '{self.name}' ({self.task}) has no tensor interface")
        if self.batched_graph:
            outputs = self.predictor.run_graph(torch.cat([item.images for item in items]))
            counts = [len(item.images) for item in items]
            return [list(parts) for parts in zip(*(out.split(counts) for out in outputs))]
        return [list(self.predictor.run_graph(item.images)) for item in items]

    def _edit(self, item: EditItem) -> np.ndarray | ApiError:
        try:
            # PIL images, so the predictor reads them as omnivis edit reads files (EXIF orientation included)
            return self.predictor.edit(item.image, mask=item.mask, box=item.box, style=item.style,
                                       strength=item.strength)
        except OmnivisError as exc:
            return ApiError(422, str(exc))

    def _generate_group(self, items: list[GenerateItem]) -> list[np.ndarray | ApiError]:
        """Generation requests of one batch: those with the same steps and guidance share one sampler
        call when the generator's randomness is all in its latents (``GeneratorPredictor.batchable``),
        each still drawing its latents from its own seed; a request with bad parameters is answered
        422 alone, before any sampling."""
        if not self.predictor.batchable():
            return [self._generate(item) for item in items]
        answers: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            try:  # each request's own checks (class, prompt, n, steps) before it joins a batch
                self.predictor.check_call(item.n, item.class_, item.steps, item.guidance, item.prompt)
            except OmnivisError as exc:
                answers[i] = ApiError(422, str(exc))
                continue
            groups.setdefault((item.steps, item.guidance), []).append(i)
        for idx in groups.values():
            calls = [{"n": items[i].n, "class_": items[i].class_, "prompt": items[i].prompt, "seed": items[i].seed,
                      "steps": items[i].steps, "guidance": items[i].guidance} for i in idx]
            try:  # a failure here answers this group's requests only
                together = self.predictor.generate_together(calls)
            except OmnivisError as exc:
                together = [ApiError(422, str(exc))] * len(idx)
            except Exception as exc:  # a bug or out of memory: 500 for this group, the server log has the rest
                logging.getLogger("omnivis.serve").exception("model '%s'", self.name)
                together = [ApiError(500, f"internal error ({type(exc).__name__}); see the server log")] * len(idx)
            for i, images in zip(idx, together):
                answers[i] = images
        return answers

    def _generate(self, item: GenerateItem) -> np.ndarray | ApiError:
        try:
            return self.predictor.generate(item.n, item.class_, steps=item.steps, guidance=item.guidance,
                                           seed=item.seed, prompt=item.prompt)
        except OmnivisError as exc:
            return ApiError(422, str(exc))
