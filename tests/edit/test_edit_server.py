"""Edit endpoints of the server: /api/edit and OpenAI's /v1/images/edits answer what the Python API
answers; masks of the wrong size, masks without transparency, missing holes and oversized results
are clear 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from omnivis.inference.edit import EditPredictor
from omnivis.serve.app import ServeConfig, create_app
from omnivis.serve.runner import load_models
from tests.deploy.serving import live_server, png_bytes


def _photo() -> np.ndarray:
    from skimage import data

    return np.asarray(data.chelsea())[80:140, 100:180]  # 80 x 60 px


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def models(edit_bundles):
    return load_models([f"sr={edit_bundles['superres']}", f"fill={edit_bundles['inpaint']}"])


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models, ServeConfig(max_pixels=60_000))) as test_client:
        yield test_client


def test_api_edit_answers_what_the_python_api_answers(client, edit_bundles):
    photo = _photo()
    answer = client.post("/api/edit/sr", files={"image": ("a.png", png_bytes(photo), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["op"] == "superres" and body["size"] == [160, 120]
    assert np.array_equal(_decode(body["png_base64"]), EditPredictor.from_dir(edit_bundles["superres"]).edit(photo))
    as_json = client.post("/api/edit/sr", json={"image": base64.b64encode(png_bytes(photo)).decode(), "strength": 0.5})
    assert as_json.status_code == 200, as_json.text


def test_api_edit_fills_a_box_or_a_mask(client, edit_bundles):
    photo = _photo()
    boxed = client.post("/api/edit/fill", files={"image": ("a.png", png_bytes(photo), "image/png")},
                        data={"box": "10,10,20,15"})
    assert boxed.status_code == 200, boxed.text
    expected = EditPredictor.from_dir(edit_bundles["inpaint"]).edit(photo, box=(10, 10, 20, 15))
    assert np.array_equal(_decode(boxed.json()["png_base64"]), expected)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[10:25, 10:30] = 255
    masked = client.post("/api/edit/fill", files={"image": ("a.png", png_bytes(photo), "image/png"),
                                                  "mask": ("m.png", png_bytes(mask), "image/png")})
    assert np.array_equal(_decode(masked.json()["png_base64"]), expected)


@pytest.mark.parametrize("files, data, status, message", [
    ({"mask": ("m.png", png_bytes(np.full((5, 5), 255, np.uint8)), "image/png")}, {}, 422, "mask is 5x5 px but the image is 80x60 px"),
    ({}, {}, 422, "needs exactly one of a mask"),
    ({}, {"box": "1,2"}, 422, "must be x,y,w,h"),
    ({}, {"colour": "red"}, 422, "colour"),
])
def test_api_edit_bad_requests_are_clear(client, files, data, status, message):
    answer = client.post("/api/edit/fill", files={"image": ("a.png", png_bytes(_photo()), "image/png"), **files}, data=data)
    assert answer.status_code == status, answer.text
    assert message in answer.text


def test_a_rotated_phone_photo_is_edited_upright_as_the_cli_does(client, edit_bundles, tmp_path):
    """A JPEG whose EXIF orientation says "rotate 90": the server's answer is the CLI's, upright."""
    photo = Image.fromarray(_photo())
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels are turned; viewers rotate them 90 degrees clockwise
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif, quality=95)
    (tmp_path / "phone.jpg").write_bytes(buffer.getvalue())
    answer = client.post("/api/edit/sr", files={"image": ("phone.jpg", buffer.getvalue(), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    expected = EditPredictor.from_dir(edit_bundles["superres"]).edit(tmp_path / "phone.jpg")
    assert answer.json()["size"] == [120, 160] and expected.shape == (160, 120, 3)
    assert np.array_equal(_decode(answer.json()["png_base64"]), expected)


def test_a_result_over_the_pixel_limit_is_refused_before_decoding(client):
    big = np.zeros((150, 150, 3), np.uint8)  # 22,500 px in, 90,000 out at x2: over the 60,000 limit
    answer = client.post("/api/edit/sr", files={"image": ("a.png", png_bytes(big), "image/png")})
    assert answer.status_code == 413 and "90000 pixels at x2" in answer.text


def test_a_non_edit_model_is_named(client):
    answer = client.post("/api/edit/nothing", files={"image": ("a.png", png_bytes(_photo()), "image/png")})
    assert answer.status_code == 404 and "no model named 'nothing'" in answer.text


def test_openai_edits_fill_the_masks_transparent_pixels(client, edit_bundles):
    photo = _photo()
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[10:25, 10:30, 3] = 0
    answer = client.post("/v1/images/edits", files={"image": ("a.png", png_bytes(photo), "image/png"),
                                                    "mask": ("m.png", png_bytes(rgba), "image/png")},
                         data={"prompt": "remove the spot", "model": "fill"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = EditPredictor.from_dir(edit_bundles["inpaint"]).edit(photo, box=(10, 10, 20, 15))
    assert np.array_equal(_decode(body["data"][0]["b64_json"]), expected) and body["size"] == "80x60"
    no_alpha = client.post("/v1/images/edits", files={"image": ("a.png", png_bytes(photo), "image/png"),
                                                      "mask": ("m.png", png_bytes(photo), "image/png")},
                           data={"prompt": "x", "model": "fill"})
    assert no_alpha.status_code == 400 and "no transparency" in no_alpha.json()["error"]["message"]
    two = client.post("/v1/images/edits", files={"image": ("a.png", png_bytes(photo), "image/png")},
                      data={"prompt": "x"})
    assert two.status_code == 400 and "2 edit models are loaded" in two.json()["error"]["message"]


def test_the_official_openai_client_edits(models, edit_bundles, tmp_path):
    import openai

    photo = _photo()
    (tmp_path / "a.png").write_bytes(png_bytes(photo))
    with live_server(models) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        result = client.images.edit(model="sr", image=open(tmp_path / "a.png", "rb"), prompt="sharper")
        assert np.array_equal(_decode(result.data[0].b64_json), EditPredictor.from_dir(edit_bundles["superres"]).edit(photo))
        with pytest.raises(openai.BadRequestError, match="a mask is for inpainting models"):
            client.images.edit(model="sr", image=open(tmp_path / "a.png", "rb"), mask=open(tmp_path / "a.png", "rb"),
                               prompt="x")
