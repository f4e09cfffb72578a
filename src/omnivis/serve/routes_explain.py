"""``POST /api/explain/{model}``: heat maps of one image's prediction (``omnivis explain`` for one image).

The image comes in the three forms of ``/api/classify/{model}`` (multipart ``image``, base64 JSON, raw
``image/*`` body); options are ``method``, ``target``, ``top_k``, ``head`` (multitask) and ``layer``.
The answer holds ``explain_images``' row per map (target, score, peak in image pixels, top10_mass, ...)
with the map drawn over the image as a base64 PNG (``overlay_png``).

Grad-CAM registers hooks on the model it explains and runs a backward pass, while the model's batcher
keeps predicting with the served model in its own thread. So maps are never drawn with the served
model: each model gets a private deep copy of its torch predictor on the first explanation, kept on
``app.state``, used by one explanation at a time (an asyncio lock queues the requests without holding
a worker thread; a thread lock guards the copy itself) in a worker thread. Under ``--backend onnx``
the torch model is what is explained (the answers of both backends are the same).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import threading
import time
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from omnivis.inference.explain_methods import METHODS
from omnivis.serve import params as P
from omnivis.serve.api_errors import ApiError
from omnivis.serve.app import served
from omnivis.serve.routes_omnivis import IMAGE_BODY, INLINE_DECODE_PIXELS, read_image_request
from omnivis.serve.uploads import decode_pixels, open_header

router = APIRouter(prefix="/api")

EXPLAINED_TASKS = ("classify", "segment", "detect", "multitask")
OPTIONS = {"method", "target", "top_k", "head", "layer", "name"}
MAX_MAPS = 20  # top_k's limit: each map is a backward pass and a PNG
OVERLAY_MAX_SIDE = 1024  # overlays of larger images are scaled down to this longer side
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

EXPLAIN_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"},
        "method": {"type": "string", "default": "gradcam",
                   "enum": list(METHODS)},
        "target": {"type": "string", "description": "a class name or index (default: the prediction)"},
        "top_k": {"type": "integer", "default": 3}, "head": {"type": "string", "enum": ["classify", "segment"]},
        "layer": {"type": "string"}}}},
    **{k: v for k, v in IMAGE_BODY["requestBody"]["content"].items() if k != "multipart/form-data"},
}}}


@dataclass
class ExplainCopy:
    """One model's private torch predictor for explanations: made on first use, never the served one."""

    task_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # queues requests in the event loop
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards the copy in the worker thread
    waiting: int = 0
    predictor: object | None = None
    hooks: set = field(default_factory=set)  # the copy's own hooks (any other is a leftover, removed)


def private_predictor(predictor):
    """A copy of ``predictor`` whose model is a deep copy: hooks and backward passes on it leave the
    served model alone. The copy has no graph or ONNX session, so nothing in it reaches the served model."""
    private = copy.copy(predictor)
    private.model = copy.deepcopy(predictor.model)
    private.graph, private.session = None, None
    if hasattr(private, "_last"):
        private._last = {}
    return private


def hook_keys(model) -> set:
    return {(id(m), name, key) for m in model.modules() for name in HOOK_DICTS for key in getattr(m, name, {})}


def remove_new_hooks(model, keep: set) -> None:
    """Remove the hooks registered since ``keep`` was taken (pytorch-grad-cam removes its own when its
    object is freed; an error's traceback can keep it alive, and the copy is reused)."""
    for module in model.modules():
        for name in HOOK_DICTS:
            hooks = getattr(module, name, None)
            for key in list(hooks or ()):
                if (id(module), name, key) not in keep:
                    del hooks[key]


def _param_of(message: str) -> str | None:
    for name in ("target", "head", "layer", "compare"):
        if f"--{name}" in message:
            return name
    if "method" in message or "rollout" in message:
        return "method"
    return None


def _overlay_png(image: Image.Image, cam, geometry: str) -> tuple[str, list[int]]:
    from omnivis.inference.explain_run import heat_overlay

    if max(image.size) > OVERLAY_MAX_SIDE:
        image = image.copy()
        image.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE), Image.BILINEAR)
    picture = heat_overlay(image, cam, geometry)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii"), [picture.width, picture.height]


def explain_one(entry: ExplainCopy, predictor, image: Image.Image, name: str, method: str, target: str | None,
                top_k: int, head: str | None, layer: str | None) -> dict:
    """Runs in a worker thread: the maps of ``image`` with the model's private copy."""
    from omnivis.errors import OmnivisError
    from omnivis.inference.explain_run import explain_images
    from omnivis.inference.explain_tasks import adapter_for

    with entry.lock:
        if entry.predictor is None:
            entry.predictor = private_predictor(predictor)
            entry.hooks = hook_keys(entry.predictor.model)
        start = time.perf_counter()
        try:
            adapter = adapter_for(entry.predictor, head=head)
            report = explain_images(adapter, [image], method=method, layer=layer, target=target, top_k=top_k,
                                    names=[name])
        except OmnivisError as exc:
            message = str(exc)
            raise ApiError(422, message.replace("--", ""), _param_of(message)) from None
        finally:
            remove_new_hooks(entry.predictor.model, entry.hooks)
        result = report["results"][0]
        maps = []
        for row, cam in zip(result["explanations"], report["maps"]):
            png, size = _overlay_png(image, cam, adapter.geometry)
            maps.append({**row, "overlay_png": png, "overlay_size": size})
        return {"method": report["method"], "layer": report["layer"], "geometry": report["geometry"],
                "size": result["size"], "maps": maps, "seconds": time.perf_counter() - start}


@router.post("/explain/{model}", summary="Heat maps of one image's prediction (Grad-CAM family or attention "
             "rollout), each drawn over the image as a PNG", openapi_extra=EXPLAIN_BODY)
async def explain(request: Request, model: str) -> JSONResponse:
    from omnivis.errors import ConfigError
    from omnivis.inference.explain import check_method

    enqueued = time.perf_counter()
    served_model = served(request, model)
    if served_model.task not in EXPLAINED_TASKS:
        hint = (" (face maps explain a similarity to a second photo: omnivis explain BUNDLE PHOTO --compare OTHER)"
                if served_model.task == "face" else "")
        raise ApiError(400, f"model '{model}' is a {served_model.task} model; explanations cover "
                       f"{', '.join(EXPLAINED_TASKS)} models{hint}", "model")
    data, filename, params = await read_image_request(request)
    P.only_known(params, OPTIONS)
    method = P.text(params, "method", "gradcam", 40)
    try:
        check_method(method)
    except ConfigError as exc:
        raise ApiError(422, str(exc), "method") from None
    target = P.text(params, "target", None, 200)
    head = P.text(params, "head", None, 40)
    layer = P.text(params, "layer", None, 200)
    top_k = P.integer(params, "top_k", 3, 1, MAX_MAPS)
    config = request.app.state.config
    copies: dict[str, ExplainCopy] = request.app.state.explain_copies
    entry = copies.setdefault(model, ExplainCopy())
    if entry.waiting >= config.max_queue:
        raise ApiError(503, f"model '{model}' is busy: {entry.waiting} explanations are waiting; try again",
                       headers={"Retry-After": "1"})
    header = open_header(data, config.max_pixels, "image")
    if header.width * header.height <= INLINE_DECODE_PIXELS:
        image = decode_pixels(header, "image")
    else:
        image = await run_in_threadpool(decode_pixels, header, "image")
    entry.waiting += 1
    waited_from = time.perf_counter()
    try:
        try:
            await asyncio.wait_for(entry.task_lock.acquire(), timeout=config.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"model '{model}' did not start the explanation within {config.request_timeout_s:g} s; "
                           "try again later", headers={"Retry-After": "1"}) from None
    finally:
        entry.waiting -= 1
    try:
        started = time.perf_counter()
        answer = await run_in_threadpool(explain_one, entry, served_model.predictor, image, filename, method,
                                         target, top_k, head, layer)
    finally:
        entry.task_lock.release()
    end = time.perf_counter()
    seconds = answer.pop("seconds")
    latency = {"queue": round((started - waited_from) * 1000, 3), "model": round(seconds * 1000, 3),
               "total": round((end - enqueued) * 1000, 3)}
    return JSONResponse({"model": model, "task": served_model.task, "image": filename,
                         "explained": "torch model", "backend": served_model.backend, **answer,
                         "latency_ms": latency})
