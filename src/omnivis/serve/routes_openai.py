"""The OpenAI Images API (``POST /v1/images/generations``, ``GET /v1/models``), so the official
``openai`` client works unchanged against a generator bundle.

A text-conditioned generator draws the prompt itself. The prompt picks the class of a
class-conditional generator (the class name, or the one class name the prompt contains); an
unconditional generator has no use for it. ``size`` is the model's own size
(``"auto"`` means that too). Extra fields ``seed`` and ``steps`` (the client's ``extra_body``) reach
the sampler. Errors are ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from omnivis.serve import params as P
from omnivis.serve.api_errors import ApiError
from omnivis.serve.app import run_job, served
from omnivis.serve.routes_omnivis import generate_item, json_body, png_base64

router = APIRouter(prefix="/v1")

IGNORED = {"quality", "style", "user", "background", "moderation", "output_compression"}  # no meaning here
FIELDS = {"prompt", "model", "n", "size", "response_format", "output_format", "stream", "seed", "steps"} | IGNORED


def pick_generator(request: Request, name: str | None):
    models = request.app.state.models
    if name is None:
        generators = [m for m in models.values() if m.task == "generate"]
        if len(generators) != 1:
            raise ApiError(400, f"say which model: {len(generators)} generators are loaded "
                           f"({', '.join(m.name for m in generators) or 'none'})", "model")
        return generators[0]
    model = served(request, name)
    if model.task != "generate":
        raise ApiError(400, f"model '{name}' is a {model.task} model, not a generator", "model")
    return model


def class_from_prompt(model, prompt: str) -> str | None:
    p = model.predictor
    if p.text or not p.conditional:  # a text-conditioned generator reads the prompt itself
        return None
    if prompt.strip() in p.classes:
        return prompt.strip()
    words = set(re.findall(r"[\w-]+", prompt.lower()))
    named = [c for c in p.classes if c.lower() in words]
    if len(named) != 1:
        shown = ", ".join(p.classes[:20])
        problem = "names none" if not named else f"names {len(named)} ({', '.join(named)})"
        raise ApiError(400, f"the prompt {problem} of this model's classes; name one of: {shown}", "prompt")
    return named[0]


def response_format_of(params: dict) -> str:
    """How the client wants its images (``b64_json`` or ``url``), after refusing what is not served:
    another output format, streaming."""
    response_format = P.text(params, "response_format", "b64_json", 20)
    if response_format not in ("b64_json", "url"):
        raise ApiError(400, f"response_format must be b64_json or url, got '{response_format}'", "response_format")
    if P.text(params, "output_format", "png", 10) != "png":
        raise ApiError(400, "output_format must be png", "output_format")
    if P.flag(params, "stream", False):
        raise ApiError(400, "streaming is not supported; leave out stream", "stream")
    return response_format


@router.post("/images/generations", summary="OpenAI-compatible image generation")
async def generations(request: Request) -> JSONResponse:
    body = await json_body(request)
    P.only_known(body, FIELDS)
    prompt = P.text(body, "prompt", None, 32000)
    if prompt is None:
        raise ApiError(400, "'prompt' is required", "prompt")
    model = pick_generator(request, P.text(body, "model", None, 200))
    size = P.text(body, "size", "auto", 40)
    own = f"{model.predictor.img_size}x{model.predictor.img_size}"
    if size not in ("auto", own):
        raise ApiError(400, f"size '{size}' is not available: model '{model.name}' makes {own} images", "size")
    response_format = response_format_of(body)
    if model.predictor.text and not prompt.strip():
        raise ApiError(400, "the prompt is empty: say what to draw", "prompt")
    params = {"n": body.get("n", 1), "class": class_from_prompt(model, prompt), "steps": body.get("steps"),
              "seed": body.get("seed", 0), "prompt": prompt if model.predictor.text else None}
    item = generate_item(model, params, request.app.state.config.max_images)
    images, _ = await run_job(request, model.name, item)
    pngs = await run_in_threadpool(lambda: [png_base64(im[..., 0] if im.shape[-1] == 1 else im) for im in images])
    key = "b64_json" if response_format == "b64_json" else "url"
    data = [{key: png if key == "b64_json" else f"data:image/png;base64,{png}", "revised_prompt": prompt}
            for png in pngs]
    return JSONResponse({"created": int(time.time()), "data": data, "output_format": "png", "size": own})


@router.get("/models", summary="OpenAI-compatible model list")
async def models(request: Request) -> dict:
    created = int(time.time())
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "omnivis"}
                                       for name in request.app.state.models]}
