"""omnivis' own JSON endpoints: ``GET /api/models`` and ``POST /api/{task}/{model}``, one per task.

An image comes as a multipart file field ``image``, as JSON ``{"image": "<base64>"}``, or as the raw
body with an ``image/*`` content type; options come as form fields, JSON keys or the query string.
The answer for one image is what ``omnivis predict`` prints for it, plus the latency split into the
time spent waiting for a batch and in the model.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from omnivis.serve import params as P
from omnivis.serve.api_errors import ApiError
from omnivis.serve.app import run_job, served, timings
from omnivis.serve.models import GenerateItem, ImageItem
from omnivis.serve.uploads import decode_base64, decode_pixels, open_header

router = APIRouter(prefix="/api")

INLINE_DECODE_PIXELS = 256 * 256  # larger images are decoded in a worker thread, off the event loop

IMAGE_BODY = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}, "top_k": {"type": "integer"},
            "mask": {"type": "boolean"}}}},
        "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "description": "base64 of the image file"}, "top_k": {"type": "integer"},
            "mask": {"type": "boolean"}}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    }}
}


async def json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep, an integer too long
        raise ApiError(400, f"the body is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(body, dict):
        raise ApiError(422, f"the JSON body must be an object, got {type(body).__name__}")
    return body


async def read_image_request(request: Request) -> tuple[bytes, str, dict]:
    """(image file bytes, its name, the other parameters) from any of the three request forms."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params: dict = dict(request.query_params)
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=32)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            files = [k for k, v in form.multi_items() if isinstance(v, UploadFile)]
            hint = f"; got a file in '{files[0]}'" if files else ""
            raise ApiError(422, f"send the image as the multipart file field 'image'{hint}", "image")
        params.update({k: v for k, v in form.multi_items() if k != "image" and isinstance(v, str)})
        return await upload.read(), upload.filename or "image", params
    if ctype == "application/json":
        body = await json_body(request)
        params.update(body)
        data = decode_base64(params.pop("image", None), "image")
        return data, str(params.pop("name", "image")), params
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await request.body(), "image", params
    raise ApiError(415, "send multipart/form-data, application/json or an image/* body, not "
                   f"'{ctype or 'no content type'}'")


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def answer_image(request: Request, task: str, model: str) -> dict:
    served_model = served(request, model)
    if served_model.task != task:
        raise ApiError(404, f"model '{model}' is a {served_model.task} model; call /api/{served_model.task}/{model}",
                       "model")
    data, filename, params = await read_image_request(request)
    P.only_known(params, {"top_k", "mask", "name"})
    top_k = P.integer(params, "top_k", 5, 1, 1000)
    mask = P.flag(params, "mask", False)
    config = request.app.state.config
    request.app.state.batchers[model].check_room()  # a full queue answers before any decoding
    header = open_header(data, config.max_pixels, "image")  # format, size, animation: no pixels decoded
    if header.width * header.height <= INLINE_DECODE_PIXELS:  # a thread hop costs more than a small decode
        image = decode_pixels(header, "image")
    else:
        image = await run_in_threadpool(decode_pixels, header, "image")
    answer, job = await run_job(request, model, ImageItem(image, top_k, mask))
    body = {"model": model, "task": task, **answer.result, "image": filename, "latency_ms": timings(job)}
    if answer.mask is not None:
        body["mask_png"] = await run_in_threadpool(png_base64, answer.mask)
    return body


@router.get("/models", summary="The loaded models: name, task, classes, input size, backend")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"models": [m.describe() for m in request.app.state.models.values()]})


IMAGE_TASKS = {  # task -> its endpoint's summary on the OpenAPI page; one route each, one handler for all
    "classify": "Top-k classes of one image",
    "detect": "Boxes (label, score, box in image pixels) in one image",
    "segment": "The class of every pixel; mask=true adds the class map as a PNG",
    "multitask": "Class, mask and boxes of one image from one multitask model",
}


def image_endpoint(task: str):
    async def endpoint(request: Request, model: str) -> JSONResponse:
        return JSONResponse(await answer_image(request, task, model))

    endpoint.__name__ = task  # the OpenAPI operation's name
    return endpoint


for _task, _summary in IMAGE_TASKS.items():
    router.add_api_route(f"/{_task}/{{model}}", image_endpoint(_task), methods=["POST"], summary=_summary,
                         openapi_extra=IMAGE_BODY)


GENERATE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "properties": {
        "n": {"type": "integer", "default": 1}, "class": {"type": "string"}, "prompt": {"type": "string"},
        "steps": {"type": "integer"},
        "seed": {"type": "integer", "default": 0}, "guidance": {"type": "number"}}}}}}}


def generate_item(model, params: dict, max_images: int) -> GenerateItem:
    """Checks every generation parameter against the model before anything is queued."""
    p = model.predictor
    item = GenerateItem(n=P.integer(params, "n", 1, 1, max_images), class_=P.text(params, "class", None, 200),
                        prompt=P.text(params, "prompt", None, 4000), steps=P.integer(params, "steps", None, 1, 1000),
                        seed=P.integer(params, "seed", 0, 0, 2**63 - 1),
                        guidance=P.number(params, "guidance", None, 0.0, 100.0))
    if p.spec.sample is None:
        raise ApiError(400, f"model '{model.name}': {p.spec.no_sample_hint}", "model")
    from omnivis.errors import ConfigError

    if p.text and not (item.prompt or "").strip():
        raise ApiError(422, f"model '{model.name}' draws what a prompt says: give a non-empty 'prompt'", "prompt")
    if item.prompt is not None and not p.text:
        raise ApiError(422, f"model '{model.name}' is not text-conditioned; leave out 'prompt'"
                       + (" and give 'class'" if p.conditional else ""), "prompt")
    try:
        if item.class_ is not None:
            p.class_index(item.class_)
        p._options(item.steps, item.guidance, None, 1.0, None)
    except ConfigError as exc:
        param = "class" if item.class_ is not None and "class" in str(exc) else "steps"
        raise ApiError(422, str(exc).replace("--", ""), param) from None
    return item


@router.post("/generate/{model}", summary="Generate images (PNG, base64) from a generator bundle",
             openapi_extra=GENERATE_BODY)
async def generate(request: Request, model: str) -> JSONResponse:
    served_model = served(request, model)
    if served_model.task != "generate":
        raise ApiError(404, f"model '{model}' is a {served_model.task} model, not a generator", "model")
    params = await json_body(request)
    P.only_known(params, {"n", "class", "prompt", "steps", "seed", "guidance"})
    item = generate_item(served_model, params, request.app.state.config.max_images)
    images, job = await run_job(request, model, item)
    pngs = await run_in_threadpool(lambda: [png_base64(im[..., 0] if im.shape[-1] == 1 else im) for im in images])
    return JSONResponse({"model": model, "task": "generate", "images": pngs, "seed": item.seed,
                         "latency_ms": timings(job)})
