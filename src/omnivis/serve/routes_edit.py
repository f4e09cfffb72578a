"""Edit endpoints: ``POST /api/edit/{model}`` (omnivis) and ``POST /v1/images/edits`` (OpenAI Images), for
edit bundles (``omnivis train edit``: superres, denoise, inpaint, enhance).

Both take the photo as a multipart file field ``image`` (the OpenAI client sends it so) or, for
``/api/edit``, base64 in JSON; a style model also takes ``style`` there. Inpainting needs what to fill: on ``/api/edit`` a ``mask`` image
(nonzero = fill, as ``omnivis edit --mask``) or ``box=x,y,w,h``; on ``/v1/images/edits`` OpenAI's
convention, a ``mask`` whose fully transparent pixels (alpha 0) mark what to edit, or else the
image's own transparent pixels. The photo is refused before decoding if it, or what the model would
make of it (x4 super-resolution multiplies pixels by 16), is over the server's pixel limit.
"""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from omnivis.serve import params as P
from omnivis.serve.api_errors import ApiError
from omnivis.serve.app import run_job, served, timings
from omnivis.serve.models import EditItem
from omnivis.serve.routes_omnivis import json_body, png_base64
from omnivis.serve.routes_openai import response_format_of
from omnivis.serve.uploads import decode_base64, decode_pixels, open_header

router = APIRouter()

FILE_FIELDS = ("image", "mask", "style")
OPENAI_FIELDS = {"prompt", "model", "n", "size", "response_format", "output_format", "user", "quality",
                 "background", "input_fidelity", "output_compression", "stream"}


async def read_edit_request(request: Request, json_allowed: bool = True) -> tuple[bytes, dict[str, bytes | None], dict]:
    """(image file bytes, {"mask": bytes or None, "style": bytes or None}, the other parameters)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params: dict = dict(request.query_params)
    if ctype == "multipart/form-data":
        form = await request.form(max_files=3, max_fields=16)
        uploads = {}
        for field in FILE_FIELDS:
            value = form.get(field) or form.get(f"{field}[]")
            if value is not None and not isinstance(value, UploadFile):
                raise ApiError(422, f"send '{field}' as a multipart file field", field)
            uploads[field] = await value.read() if value is not None else None
        if uploads["image"] is None:
            raise ApiError(422, "send the photo as the multipart file field 'image'", "image")
        params.update({k: v for k, v in form.multi_items() if k.removesuffix("[]") not in FILE_FIELDS
                       and isinstance(v, str)})
        image = uploads.pop("image")
        return image, uploads, params
    if ctype == "application/json" and json_allowed:
        params.update(await json_body(request))
        image = decode_base64(params.pop("image", None), "image")
        extra = {f: decode_base64(params.pop(f), f) if params.get(f) is not None else params.pop(f, None)
                 for f in FILE_FIELDS[1:]}
        return image, extra, params
    accepted = "multipart/form-data or application/json" if json_allowed else "multipart/form-data"
    raise ApiError(415, f"send {accepted}, not '{ctype or 'no content type'}'")


def _edit_model(request: Request, name: str):
    model = served(request, name)
    if model.task != "edit":
        raise ApiError(404, f"model '{name}' is a {model.task} model, not an image-editing model", "model")
    return model


def _open_photo(request: Request, model, data: bytes) -> Image.Image:
    """The photo's header, checked against the pixel limit for both what comes in and what goes out."""
    limit = request.app.state.config.max_pixels
    header = open_header(data, limit, "image")
    scale = model.predictor.scale
    out_pixels = header.width * header.height * scale * scale
    if out_pixels > limit:
        raise ApiError(413, f"image: {header.width}x{header.height} becomes {header.width * scale}x"
                       f"{header.height * scale} = {out_pixels} pixels at x{scale}; the limit is {limit}", "image")
    return header


def _alpha_holes(image: Image.Image) -> np.ndarray | None:
    """OpenAI's mask convention: fully transparent pixels (alpha 0) are the ones to edit; None without alpha."""
    if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and not (image.mode == "P" and "transparency" in image.info):
        return None
    return np.asarray(image.convert("RGBA"))[..., 3] == 0


def _load(header: Image.Image, name: str) -> Image.Image:
    """Decode the pixels as sent (transparency kept), turned upright by their EXIF orientation as every
    image omnivis reads is: corrupt data is a 422."""
    from PIL import ImageOps

    try:
        header.load()
        return ImageOps.exif_transpose(header)
    except Exception as exc:  # Pillow raises many types for broken data
        raise ApiError(422, f"{name}: the image data is corrupt or truncated ({type(exc).__name__})", name) from None


@router.post("/api/edit/{model}", summary="Super-resolve, denoise, inpaint or enhance one photo; a PNG back (base64)")
async def edit(request: Request, model: str) -> JSONResponse:
    served_model = _edit_model(request, model)
    request.app.state.batchers[model].check_room()
    image_bytes, extra, params = await read_edit_request(request)
    mask_bytes, style_bytes = extra["mask"], extra["style"]
    P.only_known(params, {"box", "strength"})
    strength = P.number(params, "strength", 1.0, 0.0, 10.0)
    box_text = P.text(params, "box", None, 100)
    header = _open_photo(request, served_model, image_bytes)
    photo = await run_in_threadpool(decode_pixels, header, "image")
    mask = None  # a PIL image: the predictor reads it as omnivis edit --mask does (EXIF, size check)
    if mask_bytes is not None:
        mask_header = open_header(mask_bytes, request.app.state.config.max_pixels, "mask")
        mask = await run_in_threadpool(decode_pixels, mask_header, "mask")
    box = None
    if box_text is not None:
        from omnivis.inference.edit import parse_box

        try:
            box = parse_box(box_text)
        except Exception as exc:
            raise ApiError(422, str(exc), "box") from None
    style = None
    if style_bytes is not None:
        style_header = open_header(style_bytes, request.app.state.config.max_pixels, "style")
        style = await run_in_threadpool(decode_pixels, style_header, "style")
    result, job = await run_job(request, model, EditItem(photo, mask, box, strength, style))
    png = await run_in_threadpool(png_base64, result)
    return JSONResponse({"model": model, "task": "edit", "op": served_model.predictor.op,
                         "size": [int(result.shape[1]), int(result.shape[0])], "png_base64": png,
                         "latency_ms": timings(job)})


def _pick_edit_model(request: Request, name: str | None):
    if name is not None:
        return _edit_model(request, name)
    editors = [m for m in request.app.state.models.values() if m.task == "edit"]
    if len(editors) != 1:
        raise ApiError(400, f"say which model: {len(editors)} edit models are loaded "
                       f"({', '.join(m.name for m in editors) or 'none'})", "model")
    return editors[0]


@router.post("/v1/images/edits", summary="OpenAI-compatible image edit (an edit bundle: superres, denoise, "
             "inpaint with a mask's transparent pixels, enhance)")
async def openai_edits(request: Request) -> JSONResponse:
    image_bytes, extra, params = await read_edit_request(request, json_allowed=False)
    mask_bytes = extra["mask"]
    if extra["style"] is not None:
        raise ApiError(400, "OpenAI's edits take no style image; send it to /api/edit/MODEL as 'style'", "style")
    P.only_known(params, OPENAI_FIELDS)
    prompt = P.text(params, "prompt", "", 32000)
    model = _pick_edit_model(request, P.text(params, "model", None, 200))
    request.app.state.batchers[model.name].check_room()
    if P.integer(params, "n", 1, 1, 10) != 1:
        raise ApiError(400, "n must be 1: an edit model gives one answer per image", "n")
    response_format = response_format_of(params)
    if model.predictor.op == "style":
        raise ApiError(400, f"model '{model.name}' restyles after a style image, which OpenAI's edits cannot send; "
                       f"use POST /api/edit/{model.name} with the files image and style", "model")
    header = _open_photo(request, model, image_bytes)
    scale = model.predictor.scale
    size = P.text(params, "size", "auto", 40)
    made = f"{header.width * scale}x{header.height * scale}"
    if size not in ("auto", made):
        raise ApiError(400, f"size '{size}' is not available: model '{model.name}' makes {made} from this image", "size")
    raw = await run_in_threadpool(_load, header, "image")
    holes = None
    if model.predictor.op == "inpaint":
        if mask_bytes is not None:
            mask_image = await run_in_threadpool(_load, open_header(mask_bytes, request.app.state.config.max_pixels,
                                                                    "mask"), "mask")
            holes = _alpha_holes(mask_image)
            if holes is None:
                raise ApiError(400, "mask: it has no transparency; its fully transparent pixels (alpha 0) mark "
                               "what to fill", "mask")
            # its size is checked by the predictor, as omnivis edit --mask's is
        else:
            holes = _alpha_holes(raw)
            if holes is None:
                raise ApiError(400, "send a mask (transparent where to fill), or an image with transparent pixels "
                               "to fill", "mask")
    elif mask_bytes is not None:
        raise ApiError(400, f"model '{model.name}' does {model.predictor.op}; a mask is for inpainting models", "mask")
    from omnivis.serve.uploads import as_viewed

    photo = as_viewed(raw)
    result, _ = await run_job(request, model.name, EditItem(photo, holes, None, 1.0))
    png = await run_in_threadpool(png_base64, result)
    entry = {"b64_json": png} if response_format == "b64_json" else {"url": f"data:image/png;base64,{png}"}
    return JSONResponse({"created": int(time.time()), "data": [{**entry, "revised_prompt": prompt}],
                         "output_format": "png", "size": made})
