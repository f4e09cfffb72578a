"""A corpus of bad requests: every one gets a 4xx with a JSON error in its endpoint family's format,
none a 5xx, and the server stays ready. Odd but valid images (CMYK, 16-bit, palette with
transparency) are converted as a viewer shows them and answered."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from omnivis.serve.app import ServeConfig, create_app
from omnivis.serve.runner import load_models
from tests.deploy.serving import digit_png, png_bytes

DIGIT, _ = digit_png()


def _encoded(image: Image.Image, format: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid PNG whose header claims ``width`` x ``height`` (a decompression bomb when large)."""
    data = bytearray(png_bytes(np.zeros((4, 4), np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _bit_flipped(data: bytes) -> bytes:
    flipped = bytearray(data)
    for i in range(60, len(flipped) - 12, 7):
        flipped[i] ^= 0x5A
    return bytes(flipped)


def _animated_gif() -> bytes:
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _file(data: bytes, name: str = "x.png") -> dict:
    return {"files": {"image": (name, data, "image/png")}}


BAD_IMAGES = {  # name: (the upload, the status it must get)
    "truncated PNG": (DIGIT[: len(DIGIT) // 2], 422),
    "bit-flipped PNG": (_bit_flipped(png_bytes(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))),
                        422),
    "decompression bomb": (_png_claiming(100_000, 100_000), 413),
    "over the pixel limit": (png_bytes(np.zeros((1200, 1000), np.uint8)), 413),
    "0x0 image": (_png_claiming(0, 0), None),  # Pillow refuses it at the header (415) or we do (422)
    "animated GIF": (_animated_gif(), 422),
    "PDF renamed .png": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF", 415),
    "EPS renamed .png": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 415),
    "empty file": (b"", 422),
    "text": (b"hello, world", 415),
}

ODD_BUT_VALID = {
    "CMYK JPEG": _encoded(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"),
    "16-bit PNG": _encoded(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"),
    "palette PNG with transparency": _encoded(Image.new("P", (20, 20), 3), "PNG", transparency=3),
}


@pytest.fixture(scope="module")
def client(digits_bundle, generator_bundle):
    models = load_models([f"digits={digits_bundle}", f"gen={generator_bundle}"])
    with TestClient(create_app(models, ServeConfig(max_pixels=1_000_000, max_upload_mb=1.0))) as c:
        yield c


def _is_clear_error(response, kserve: bool = False) -> bool:
    body = response.json()
    if kserve:
        return set(body) == {"error"} and isinstance(body["error"], str) and len(body["error"]) > 10
    error = body["error"]
    return set(error) == {"message", "type", "param", "code"} and error["code"] == response.status_code and \
        len(error["message"]) > 10


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_gets_a_clear_4xx(client, name):
    data, status = BAD_IMAGES[name]
    response = client.post("/api/classify/digits", **_file(data))
    assert response.status_code == status if status else response.status_code in (415, 422), response.text
    assert _is_clear_error(response)
    assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_are_answered(client, name):
    response = client.post("/api/classify/digits", **_file(ODD_BUT_VALID[name]))
    assert response.status_code == 200 and len(response.json()["top_k"]) == 5


BAD_REQUESTS = [  # (what is wrong, method, path, request arguments, status)
    ("oversized body", "/api/classify/digits", _file(b"\0" * (1024 * 1024 + 1)), 413),
    ("wrong field name", "/api/classify/digits", {"files": {"picture": ("x.png", DIGIT, "image/png")}}, 422),
    ("no body", "/api/classify/digits", {}, 415),
    ("a form field instead of a file", "/api/classify/digits",
     {"data": {"image": "abc"}, "files": {"other": ("x.png", DIGIT, "image/png")}}, 422),
    ("a url-encoded form", "/api/classify/digits", {"data": {"image": "abc"}}, 415),
    ("nested JSON image", "/api/classify/digits", {"json": {"image": {"data": "abc"}}}, 422),
    ("JSON list body", "/api/classify/digits", {"json": [1, 2]}, 422),
    ("broken JSON", "/api/classify/digits", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    ("bad base64", "/api/classify/digits", {"json": {"image": "not base64!"}}, 422),
    ("top_k is text", "/api/classify/digits", {**_file(DIGIT), "data": {"top_k": "many"}}, 422),
    ("top_k is nested", "/api/classify/digits", {"json": {"image": "aGVsbG8=", "top_k": {"a": 1}}}, 422),
    ("unknown option", "/api/classify/digits", {**_file(DIGIT), "data": {"topk": "3"}}, 422),
    ("unknown model", "/api/classify/nope", _file(DIGIT), 404),
    ("unknown route", "/api/paint/digits", _file(DIGIT), 404),
    ("absurd n", "/api/generate/gen", {"json": {"n": 10**9}}, 422),
    ("n is a string of digits in JSON", "/api/generate/gen", {"json": {"n": "2; drop"}}, 422),
    ("absurd steps", "/api/generate/gen", {"json": {"steps": 10**6}}, 422),
    ("steps over the limit", "/api/generate/gen", {"json": {"steps": 1001}}, 422),
    ("NaN guidance", "/api/generate/gen", {"content": b'{"guidance": NaN}',
                                          "headers": {"content-type": "application/json"}}, 422),
    ("negative seed", "/api/generate/gen", {"json": {"seed": -1}}, 422),
    ("boolean n", "/api/generate/gen", {"json": {"n": True}}, 422),
    ("unknown class", "/api/generate/gen", {"json": {"class": "dog"}}, 422),
    ("OpenAI: absurd n", "/v1/images/generations", {"json": {"prompt": "3", "n": 100000}}, 422),
    ("OpenAI: absurd size", "/v1/images/generations", {"json": {"prompt": "3", "size": "99999x99999"}}, 400),
    ("OpenAI: no prompt", "/v1/images/generations", {"json": {"n": 1}}, 400),
    ("OpenAI: NaN n", "/v1/images/generations", {"content": b'{"prompt": "3", "n": NaN}',
                                                 "headers": {"content-type": "application/json"}}, 422),
    ("OpenAI: unknown model", "/v1/images/generations", {"json": {"prompt": "3", "model": "dalle"}}, 404),
    ("OpenAI: a classifier", "/v1/images/generations", {"json": {"prompt": "3", "model": "digits"}}, 400),
    ("OpenAI: unknown field", "/v1/images/generations", {"json": {"prompt": "3", "nn": 2}}, 422),
    ("OpenAI: stream", "/v1/images/generations", {"json": {"prompt": "3", "stream": True}}, 400),
    ("JSON nested 100,000 deep", "/api/generate/gen", {"content": b"[" * 100_000,
                                                       "headers": {"content-type": "application/json"}}, 400),
    ("an integer of 5,000 digits", "/api/generate/gen", {"content": b'{"n": ' + b"1" * 5000 + b"}",
                                                         "headers": {"content-type": "application/json"}}, 400),
    ("top_k of 50 digits in a form", "/api/classify/digits", {**_file(DIGIT), "data": {"top_k": "9" * 50}}, 422),
]

KSERVE_REQUESTS = [
    ("no content type, not JSON", {"content": b"\x00\x01"}, 400),
    ("no inputs", {"json": {}}, 400),
    ("wrong input name", {"json": {"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 1, 16, 16],
                                               "data": [0] * 256}]}}, 400),
    ("wrong shape", {"json": {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 3, 16, 16],
                                          "data": [0] * 768}]}}, 400),
    ("data does not fill the shape", {"json": {"inputs": [{"name": "images", "datatype": "UINT8",
                                                           "shape": [1, 1, 16, 16], "data": [0] * 5}]}}, 400),
    ("values out of range", {"json": {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 16, 16],
                                                  "data": [300] * 256}]}}, 400),
    ("binary size lies", {"content": b'{"inputs":[{"name":"images","datatype":"UINT8","shape":[1,1,16,16],'
                                     b'"parameters":{"binary_data_size":256}}]}' + b"\0" * 10,
                          "headers": {"Inference-Header-Content-Length": "90"}}, 400),
    ("header length past the body", {"content": b"{}", "headers": {"Inference-Header-Content-Length": "999"}}, 400),
    ("unknown output", {"json": {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 16, 16],
                                             "data": [0] * 256}], "outputs": [{"name": "logits"}]}}, 400),
    ("parameters not an object", {"json": {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 16, 16],
                                                       "data": [0] * 256, "parameters": [1]}], "parameters": "x"}}, 400),
    ("data as strings", {"json": {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 16, 16],
                                              "data": ["7"] * 256}]}}, 400),
    ("data as fractions", {"json": {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 1, 16, 16],
                                                "data": [1.7] * 256}]}}, 400),
    ("a header length that is not ASCII digits", {"content": b"{}",
                                                  "headers": {"Inference-Header-Content-Length": "\u00b2".encode("latin-1")}}, 400),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_a_clear_4xx(client, case):
    _, path, kwargs, status = case
    response = client.post(path, **kwargs)
    assert (response.status_code == status) if status else 400 <= response.status_code < 500, response.text
    assert _is_clear_error(response)
    assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("case", KSERVE_REQUESTS, ids=[c[0] for c in KSERVE_REQUESTS])
def test_bad_kserve_request_gets_a_clear_4xx(client, case):
    _, kwargs, status = case
    response = client.post("/v2/models/digits/infer", **kwargs)
    assert response.status_code == status, response.text
    assert _is_clear_error(response, kserve=True)
    assert client.post("/v2/models/nope/infer", json={}).status_code == 404
    assert client.post("/v2/models/gen/infer", json={}).status_code == 400  # a generator has no tensor interface


def test_null_means_the_default(client):
    """OpenAI's client sends ``null`` for an option left at None; that is the default, not an error."""
    response = client.post("/api/generate/gen", json={"n": None, "seed": None, "steps": 2})
    assert response.status_code == 200 and len(response.json()["images"]) == 1


def test_an_unknown_model_version_is_404(client):
    assert client.get("/v2/models/digits/versions/1").status_code == 200
    response = client.get("/v2/models/digits/versions/7")
    assert response.status_code == 404 and "version 1" in response.json()["error"]
