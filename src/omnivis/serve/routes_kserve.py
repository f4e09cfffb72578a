"""KServe v2 / Open Inference Protocol REST, so ``tritonclient.http`` works with its defaults.

A model with an exported graph (classify, segment, detect) is served as that graph's tensors: input
``images`` UINT8 (N, C, S, S) at the bundle's size, outputs named as in the ONNX file. Tensors come
and go as JSON lists or with the binary tensor extension (``Inference-Header-Content-Length``: a
JSON header, then the raw bytes of each tensor in order). Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from omnivis.serve.api_errors import ApiError
from omnivis.serve.app import run_job, served
from omnivis.serve.models import TensorItem

router = APIRouter(prefix="/v2")  # metadata and health: open
models_router = APIRouter(prefix="/v2/models")

NUMPY = {"UINT8": np.uint8, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
         "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32,
         "FP64": np.float64, "BOOL": np.bool_}
HEADER = "inference-header-content-length"


def tensor_model(request: Request, name: str):
    model = served(request, name)
    if model.graph is None:
        raise ApiError(400, f"model '{name}' ({model.task}) has no tensor interface; use /api/{model.task}/{name}")
    return model


@router.get("")
async def server_metadata() -> dict:
    return {"name": "omnivis", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request):
    state = request.app.state
    is_ready = bool(state.ready and not state.draining)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@models_router.get("/{name}")
@models_router.get("/{name}/versions/{version}", include_in_schema=False)
async def model_metadata(request: Request, name: str, version: str | None = None) -> dict:
    check_version(version)
    model = tensor_model(request, name)
    return {"name": name, "versions": ["1"], "platform": "onnxruntime" if model.backend == "onnx" else "pytorch",
            "inputs": [{"name": "images", "datatype": "UINT8", "shape": model.input_shape}],
            "outputs": model.tensor_outputs}


@models_router.get("/{name}/ready")
@models_router.get("/{name}/versions/{version}/ready", include_in_schema=False)
async def model_ready(request: Request, name: str, version: str | None = None):
    check_version(version)
    served(request, name)
    is_ready = bool(request.app.state.ready and not request.app.state.draining)
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


def parse_infer(raw: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON inference header and the binary tail after it."""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(raw):
            raise ApiError(400, f"Inference-Header-Content-Length {header_length!r} does not fit the "
                           f"{len(raw)}-byte body")
        head, tail = raw[: int(header_length)], raw[int(header_length):]
    else:
        head, tail = raw, b""
    try:
        body = json.loads(head)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep, an integer too long
        raise ApiError(400, f"the inference header is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise ApiError(400, "the request must be a JSON object with an 'inputs' list")
    return body, tail


def parameters(spec: dict, where: str) -> dict:
    """A tensor's or the request's ``parameters``: an object, or absent."""
    value = spec.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"'parameters' of {where} must be an object")
    return value


def read_input(body: dict, tail: bytes, model) -> np.ndarray:
    """The one input tensor ``images``, checked against the model's shape before anything is queued."""
    inputs = body["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != "images":
        raise ApiError(400, "send exactly one input, named 'images'")
    spec = inputs[0]
    if spec.get("datatype") != "UINT8":
        raise ApiError(400, f"input 'images' must be UINT8, got {spec.get('datatype')!r}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ApiError(400, f"input 'images' has no valid shape: {shape!r}")
    want = model.input_shape
    if len(shape) != 4 or shape[1:] != want[1:] or shape[0] < 1 or (want[0] != -1 and shape[0] != want[0]):
        raise ApiError(400, f"input 'images' must have shape {want} (-1: any batch), got {shape}")
    if shape[0] > 256:
        raise ApiError(400, f"input 'images' has a batch of {shape[0]}; the limit is 256")
    count = int(np.prod(shape))
    size = parameters(spec, "input 'images'").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count or size > len(tail):
            raise ApiError(400, f"binary_data_size {size!r} does not match shape {shape} ({count} bytes) or the body")
        return np.frombuffer(tail[:size], dtype=np.uint8).reshape(shape)
    data = spec.get("data")
    if not isinstance(data, list):
        raise ApiError(400, "input 'images' has neither 'data' nor binary_data_size")
    try:
        array = np.asarray(data)
        if array.dtype.kind not in "iu" or array.size != count:
            raise ValueError
        array = array.reshape(shape)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(400, f"input 'images' data must be {count} integers (shape {shape})") from None
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise ApiError(400, "input 'images' must hold UINT8 values (0..255)")
    return array.astype(np.uint8)


def wanted_outputs(body: dict, model) -> list[tuple[str, bool]]:
    """(name, as binary) per requested output; all outputs when none are named."""
    names = [o["name"] for o in model.tensor_outputs]
    default_binary = bool(parameters(body, "the request").get("binary_data_output", False))
    requested = body.get("outputs")
    if not requested:
        return [(name, default_binary) for name in names]
    if not isinstance(requested, list):
        raise ApiError(400, "'outputs' must be a list")
    out = []
    for spec in requested:
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in names:
            raise ApiError(400, f"unknown output {name!r}; this model has: {', '.join(names)}")
        out.append((name, bool(parameters(spec, f"output {name!r}").get("binary_data", default_binary))))
    return out


def encode_response(name: str, model, outputs: list[torch.Tensor], wanted: list[tuple[str, bool]],
                    request_id: str | None = None) -> Response:
    by_name = {spec["name"]: (spec, tensor) for spec, tensor in zip(model.tensor_outputs, outputs)}
    described, blobs = [], []
    for out_name, binary in wanted:
        spec, tensor = by_name[out_name]
        array = tensor.numpy() if not tensor.dtype == torch.bool else tensor.numpy().astype(np.bool_)
        entry = {"name": out_name, "datatype": spec["datatype"], "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.flatten().tolist()
        described.append(entry)
    header = {"model_name": name, "model_version": "1", "outputs": described}
    if request_id is not None:
        header["id"] = request_id
    head = json.dumps(header).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


def check_version(version: str | None) -> None:
    if version is not None and version != "1":
        raise ApiError(404, f"model version '{version}' does not exist; each model has version 1")


@models_router.post("/{name}/infer")
@models_router.post("/{name}/versions/{version}/infer", include_in_schema=False)
async def infer(request: Request, name: str, version: str | None = None):
    check_version(version)
    model = tensor_model(request, name)
    raw = await request.body()
    body, tail = parse_infer(raw, request.headers.get(HEADER))
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, "'id' must be a string")
    images = await run_in_threadpool(read_input, body, tail, model)
    wanted = wanted_outputs(body, model)
    outputs, _ = await run_job(request, name, TensorItem(torch.from_numpy(images.copy())))
    return await run_in_threadpool(encode_response, name, model, outputs, wanted, request_id)
