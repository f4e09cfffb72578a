"""Face endpoints: ``POST /api/face/verify/{model}`` (two photos: same person?) and
``POST /api/face/identify/{model}`` (one photo against the gallery given with ``--face-index``).

Photos come as multipart file fields or base64 JSON keys (``image`` for identify, ``image_a`` and
``image_b`` for verify). Concurrent requests share one embedding call (``ServedModel._answer_faces``);
every decision names the threshold and the false-accept rate it was calibrated for.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from omnivis.serve import params as P
from omnivis.serve.api_errors import ApiError
from omnivis.serve.app import run_job, served, timings
from omnivis.serve.models import FaceItem
from omnivis.serve.routes_omnivis import json_body
from omnivis.serve.uploads import decode_base64, decode_pixels, open_header

router = APIRouter(prefix="/api/face")


def _body(fields: tuple[str, ...]) -> dict:
    files = {f: {"type": "string", "format": "binary"} for f in fields}
    texts = {f: {"type": "string", "description": "base64 of the image file"} for f in fields}
    extra = {"top_k": {"type": "integer"}} if fields == ("image",) else {}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": list(fields), "properties": {**files, **extra}}},
        "application/json": {"schema": {"type": "object", "required": list(fields), "properties": {**texts, **extra}}},
    }}}


async def read_photos(request: Request, fields: tuple[str, ...]) -> tuple[list, dict]:
    """The photos named ``fields`` (decoded, in that order) and the other parameters."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params: dict = dict(request.query_params)
    blobs: dict[str, bytes] = {}
    if ctype == "multipart/form-data":
        form = await request.form(max_files=len(fields), max_fields=16)
        for field in fields:
            upload = form.get(field)
            if not isinstance(upload, UploadFile):
                raise ApiError(422, f"send the photo as the multipart file field '{field}'", field)
            blobs[field] = await upload.read()
        params.update({k: v for k, v in form.multi_items() if k not in fields and isinstance(v, str)})
    elif ctype == "application/json":
        params.update(await json_body(request))
        for field in fields:
            blobs[field] = decode_base64(params.pop(field, None), field)
    else:
        raise ApiError(415, f"send multipart/form-data or application/json, not '{ctype or 'no content type'}'")
    max_pixels = request.app.state.config.max_pixels
    headers = [open_header(blobs[f], max_pixels, f) for f in fields]  # refuse bombs before decoding anything
    photos = [await run_in_threadpool(decode_pixels, h, f) for h, f in zip(headers, fields)]
    return photos, params


def _face_model(request: Request, model: str):
    served_model = served(request, model)
    if served_model.task != "face":
        raise ApiError(404, f"model '{model}' is a {served_model.task} model, not a face model", "model")
    if not isinstance(served_model.predictor.config.get("threshold"), dict):  # the server's set-up, not the request
        raise ApiError(409, f"model '{model}' has no calibrated threshold; run omnivis face calibrate "
                       f"{served_model.bundle_dir} and restart the server", "model")
    return served_model


@router.post("/verify/{model}", summary="Are two photos the same person? Score, threshold and its FAR",
             openapi_extra=_body(("image_a", "image_b")))
async def verify(request: Request, model: str) -> JSONResponse:
    _face_model(request, model)
    request.app.state.batchers[model].check_room()
    photos, params = await read_photos(request, ("image_a", "image_b"))
    if params:
        field = sorted(params)[0]
        raise ApiError(422, f"unknown field '{field}'; this endpoint takes only the photos image_a and image_b", field)
    answer, job = await run_job(request, model, FaceItem("verify", photos))
    return JSONResponse({"model": model, "task": "face", **answer, "latency_ms": timings(job)})


@router.post("/identify/{model}", summary="Who is in the photo: top-k enrolled people or 'unknown'",
             openapi_extra=_body(("image",)))
async def identify(request: Request, model: str) -> JSONResponse:
    served_model = _face_model(request, model)
    if served_model.face_index is None:
        raise ApiError(409, f"model '{model}' has no gallery; start the server with --face-index {model}=INDEX",
                       "model")
    request.app.state.batchers[model].check_room()
    photos, params = await read_photos(request, ("image",))
    P.only_known(params, {"top_k"})
    top_k = P.integer(params, "top_k", 5, 1, 1000)
    answer, job = await run_job(request, model, FaceItem("identify", photos, top_k))
    return JSONResponse({"model": model, "task": "face", **answer, "latency_ms": timings(job)})
