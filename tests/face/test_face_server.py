"""Face endpoints of the server: verify and identify answer what the Python API answers, with the
threshold and FAR; a model without a gallery, a wrong field and a non-face model are clear 4xx."""

from __future__ import annotations

import base64
import concurrent.futures

import pytest
from fastapi.testclient import TestClient

from omnivis.errors import BundleError, ConfigError
from omnivis.inference.face import FacePredictor
from omnivis.inference.face_index import enroll, identify
from omnivis.serve.app import ServeConfig, create_app
from omnivis.serve.runner import load_models
from tests.deploy.serving import png_bytes
from tests.face.conftest import person_photos, save_untrained_face_bundle, write_people


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("face-serve")
    bundle = save_untrained_face_bundle(root / "face")
    gallery = write_people(root / "gallery", range(4), photos=2)
    enroll(FacePredictor.from_dir(bundle), gallery).save(root / "index")
    other = save_untrained_face_bundle(root / "plain")  # the same kind of model, served without a gallery
    models = load_models([f"face={bundle}", f"plain={other}"], face_indexes=[f"face={root / 'index'}"])
    with TestClient(create_app(models, ServeConfig(max_batch=8, max_wait_ms=20))) as client:
        yield client, bundle, root


def test_verify_answers_what_the_python_api_answers(setup):
    client, bundle, _ = setup
    a, b = person_photos(0, 1, seed=1)[0], person_photos(1, 1, seed=2)[0]
    answer = client.post("/api/face/verify/face", files={"image_a": ("a.png", png_bytes(a), "image/png"),
                                                         "image_b": ("b.png", png_bytes(b), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = FacePredictor.from_dir(bundle).verify([a], [b])[0]
    assert body["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert body["same"] == expected["same"] and body["threshold"] == 0.5 and body["far"] == 0.01
    same = client.post("/api/face/verify/face", json={"image_a": base64.b64encode(png_bytes(a)).decode(),
                                                      "image_b": base64.b64encode(png_bytes(a)).decode()}).json()
    assert same["score"] == pytest.approx(1.0, abs=1e-5) and same["same"] is True


def test_concurrent_identify_requests_match_the_python_api(setup):
    client, bundle, root = setup
    photos = [person_photos(p, 1, seed=40 + p)[0] for p in range(4)]

    def ask(photo):
        return client.post("/api/face/identify/face", files={"image": ("q.png", png_bytes(photo), "image/png")},
                           data={"top_k": "2"})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, photos))
    predictor = FacePredictor.from_dir(bundle)
    from omnivis.inference.face_index import load_index

    expected = identify(predictor, load_index(root / "index"), photos, top_k=2)
    for answer, want in zip(answers, expected):
        assert answer.status_code == 200, answer.text
        face = answer.json()["faces"][0]
        assert [c["identity"] for c in face["top_k"]] == [c["identity"] for c in want["faces"][0]["top_k"]]
        assert face["score"] == pytest.approx(want["faces"][0]["score"], abs=1e-5) and face["far"] == 0.01


def test_face_errors_are_clear(setup):
    client, _, _ = setup
    photo = png_bytes(person_photos(0, 1, seed=3)[0])
    no_gallery = client.post("/api/face/identify/plain", files={"image": ("q.png", photo, "image/png")})
    assert no_gallery.status_code == 409 and "--face-index plain=INDEX" in no_gallery.json()["error"]["message"]
    wrong_field = client.post("/api/face/verify/face", files={"image_a": ("a.png", photo, "image/png"),
                                                              "photo": ("b.png", photo, "image/png")})
    assert wrong_field.status_code == 422 and "image_b" in wrong_field.json()["error"]["message"]
    unknown = client.post("/api/face/identify/face", files={"image": ("q.png", photo, "image/png")},
                          data={"topk": "2"})
    assert unknown.status_code == 422
    not_an_image = client.post("/api/face/identify/face", files={"image": ("q.png", b"%PDF-1.4", "image/png")})
    assert not_an_image.status_code in (415, 422)
    assert client.get("/v2/health/ready").status_code == 200
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["face"]["gallery_people"] == 4 and models["plain"]["gallery_people"] == 0


def test_a_gallery_from_another_model_is_refused_at_start(setup, tmp_path):
    _, _, root = setup
    other = save_untrained_face_bundle(tmp_path / "other", seed=3)
    with pytest.raises(BundleError, match="was enrolled by model"):
        load_models([f"face={other}"], face_indexes=[f"face={root / 'index'}"])
    with pytest.raises(ConfigError, match="not a served model"):
        load_models([f"face={other}"], face_indexes=[f"nobody={root / 'index'}"])


def test_a_model_without_a_threshold_answers_409(tmp_path):
    bundle = save_untrained_face_bundle(tmp_path / "uncalibrated", threshold=None)
    with TestClient(create_app(load_models([f"face={bundle}"]))) as client:
        photo = png_bytes(person_photos(0, 1, seed=3)[0])
        answer = client.post("/api/face/verify/face", files={"image_a": ("a.png", photo, "image/png"),
                                                             "image_b": ("b.png", photo, "image/png")})
        assert answer.status_code == 409 and "omnivis face calibrate" in answer.json()["error"]["message"]
