"""The server through FastAPI's test client: each task's endpoint answers what ``omnivis predict``
answers, the ONNX backend gives the same JSON, KServe v2 tensors match the graph, and the API key,
readiness, OpenAPI page and metrics behave."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from omnivis.inference.classify import ClassifyPredictor
from omnivis.inference.segment import SegmentPredictor
from omnivis.serve.app import ServeConfig, create_app
from omnivis.serve.runner import load_models
from tests.deploy.serving import digit_png, png_bytes


@pytest.fixture(scope="module")
def models(digits_bundle, shapes_bundle, generator_bundle, detector_bundle):
    return load_models([str(digits_bundle), f"shapes={shapes_bundle}", f"gen={generator_bundle}",
                        f"det={detector_bundle}"])


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


def test_classify_answers_what_predict_answers(client, digits_bundle):
    data, pixels = digit_png()
    answer = client.post("/api/classify/digits", files={"image": ("seven.png", data, "image/png")},
                         data={"top_k": "3"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = ClassifyPredictor.from_dir(digits_bundle).predict([pixels], top_k=3)[0]
    assert body["image"] == "seven.png" and body["task"] == "classify"
    assert body["label"] == expected["label"] and body["top_k"] == expected["top_k"]
    assert set(body["latency_ms"]) == {"queue", "model", "total"}
    # the same image as JSON base64 and as a raw image/png body: the same answer
    as_json = client.post("/api/classify/digits", json={"image": base64.b64encode(data).decode(), "top_k": 3}).json()
    raw = client.post("/api/classify/digits?top_k=3", content=data, headers={"content-type": "image/png"}).json()
    assert as_json["top_k"] == raw["top_k"] == body["top_k"]


def test_segment_mask_png_is_the_predicted_class_map(client, shapes_bundle):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    body = client.post("/api/segment/shapes", files={"image": ("x.png", png_bytes(pixels), "image/png")},
                       data={"mask": "true"}).json()
    predictor = SegmentPredictor.from_dir(shapes_bundle)
    expected = predictor.predict([pixels])[0]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    assert mask.shape == (37, 53) and body["size"] == [53, 37]
    assert np.array_equal(mask, predictor.predict_masks([pixels])[0])
    assert body["class_fractions"] == expected["class_fractions"]


def test_detect_and_unknown_or_wrong_model(client):
    pixels = np.full((64, 80, 3), 30, dtype=np.uint8)
    body = client.post("/api/detect/det", files={"image": ("x.png", png_bytes(pixels), "image/png")}).json()
    assert body["task"] == "detect" and isinstance(body["detections"], list)
    missing = client.post("/api/detect/nope", files={"image": ("x.png", png_bytes(pixels), "image/png")})
    assert missing.status_code == 404 and "loaded: digits, shapes, gen, det" in missing.json()["error"]["message"]
    wrong = client.post("/api/detect/digits", files={"image": ("x.png", png_bytes(pixels), "image/png")})
    assert wrong.status_code == 404 and "/api/classify/digits" in wrong.json()["error"]["message"]


def test_generate_is_seeded_and_checks_parameters_first(client, generator_bundle):
    from omnivis.tasks.generate.sample import GeneratorPredictor

    a = client.post("/api/generate/gen", json={"n": 3, "steps": 2, "seed": 5, "class": "4"}).json()
    b = client.post("/api/generate/gen", json={"n": 3, "steps": 2, "seed": 5, "class": "4"}).json()
    assert len(a["images"]) == 3 and a["images"] == b["images"]
    first = np.asarray(Image.open(io.BytesIO(base64.b64decode(a["images"][0]))))
    expected = GeneratorPredictor.from_dir(generator_bundle).generate(3, "4", steps=2, seed=5)
    assert np.array_equal(first, expected[0, ..., 0])
    bad = client.post("/api/generate/gen", json={"n": 2, "class": "dog"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "class"


def test_kserve_json_infer_matches_the_graph(client, models):
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    request = {"id": "r1", "inputs": [{"name": "images", "datatype": "UINT8", "shape": [3, 1, 16, 16],
                                       "data": images.flatten().tolist()}],
               "outputs": [{"name": "top_k_indices"}]}
    body = client.post("/v2/models/digits/infer", json=request).json()
    assert body["id"] == "r1" and [o["name"] for o in body["outputs"]] == ["top_k_indices"]
    out = body["outputs"][0]
    expected = models["digits"].predictor.run_graph(images)[2]
    assert out["shape"] == [3, 5] and out["datatype"] == "INT64"
    assert np.array_equal(np.array(out["data"]).reshape(3, 5), expected.numpy())
    meta = client.get("/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 1, 16, 16]}]
    assert client.get("/v2/models/det").json()["inputs"][0]["shape"] == [1, 3, 64, 64]  # detectors: one image


def test_onnx_backend_gives_the_same_json(digits_bundle, tmp_path):
    from omnivis.deploy.onnx_export import export_bundle

    export_bundle(digits_bundle, out=tmp_path / "digits.onnx")
    data, _ = digit_png(-5)
    answers = {}
    for backend in ("torch", "onnx"):
        from omnivis.serve.models import ServedModel

        model = ServedModel("digits", digits_bundle, backend=backend, onnx=tmp_path / "digits.onnx")
        assert model.backend == backend
        with TestClient(create_app({"digits": model})) as c:
            body = c.post("/api/classify/digits", files={"image": ("d.png", data, "image/png")}).json()
        answers[backend] = (body["label"], [t["label"] for t in body["top_k"]],
                            [round(t["score"], 4) for t in body["top_k"]])
    assert answers["torch"] == answers["onnx"]


def test_api_key_readiness_openapi_and_metrics(models):
    app = create_app(models, ServeConfig(api_key="s3cret"))
    data, _ = digit_png()
    with TestClient(app) as c:
        refused = c.post("/api/classify/digits", files={"image": ("d.png", data, "image/png")})
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        assert c.post("/v2/models/digits/infer", json={}).json() == {"error": refused.json()["error"]["message"]}
        ok = c.post("/api/classify/digits", files={"image": ("d.png", data, "image/png")},
                    headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/api/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v2/health/ready").json() == {"ready": True}  # health and metrics stay open
        paths = c.get("/openapi.json").json()["paths"]
        for path in ("/api/classify/{model}", "/api/detect/{model}", "/api/segment/{model}", "/api/multitask/{model}",
                     "/api/generate/{model}", "/v1/images/generations", "/v2/models/{name}/infer"):
            assert path in paths
        app.state.draining = True
        assert c.get("/v2/health/ready").status_code == 503 and c.get("/v2/health/live").status_code == 200
        metrics = c.get("/metrics").text
    assert 'omnivis_requests_total{code="401",endpoint="/api/classify/{model}"} 1.0' in metrics
    assert 'omnivis_requests_total{code="200",endpoint="/api/classify/{model}"} 1.0' in metrics
    assert 'omnivis_batch_size_count{model="digits"} 1.0' in metrics
    assert "omnivis_queue_seconds_bucket" in metrics and "omnivis_model_seconds_bucket" in metrics


def test_generation_requests_in_one_batch_share_one_sampler_call(generator_bundle):
    """Requests with the same steps and guidance are sampled together, each from its own seed and class,
    and each answer is what that request gets alone; a bad request is a 422 of its own."""
    import dataclasses

    from omnivis.serve.models import GenerateItem

    model = load_models([f"gen={generator_bundle}"])["gen"]
    spec, calls = model.predictor.spec, []
    model.predictor.spec = dataclasses.replace(spec, decode=lambda *a, **k: calls.append(len(a[2])) or spec.decode(*a, **k))
    items = [GenerateItem(n=2, class_="0", steps=3, seed=1), GenerateItem(n=1, class_="nope", steps=3),
             GenerateItem(n=1, class_="1", steps=3, seed=2), GenerateItem(n=1, steps=5, seed=2)]
    answers = model.run_batch(items)
    assert calls == [3]  # steps 3: the two good requests in one sampler call; steps 5 alone, as generate runs it
    assert answers[1].status == 422 and "nope" in str(answers[1])
    model.predictor.spec = spec
    for item, images in zip(items, answers):
        if item.class_ != "nope":
            alone = model.predictor.generate(item.n, item.class_, steps=item.steps, seed=item.seed)
            assert images.shape == alone.shape and np.abs(images.astype(int) - alone.astype(int)).max() <= 1
