"""``POST /api/explain/{model}``: the maps of one image, as ``omnivis explain`` draws them, for classify,
segment, detect and multitask models; clear 4xx for what cannot be explained; and the served model is
never the one Grad-CAM hooks (a classify request during an explanation still gets the right answer)."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from omnivis.serve.app import create_app
from omnivis.serve.runner import load_models
from tests.deploy.serving import digit_png, png_bytes

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


@pytest.fixture(scope="module")
def multitask_bundle(tmp_path_factory):
    from omnivis.tasks.multitask import train_multitask
    from tests.tasks.test_multitask import tiny_multitask_config

    config = tiny_multitask_config(tasks="classify,segment", trainer=dict(max_steps=2))
    return train_multitask(config, tmp_path_factory.mktemp("explain") / "multi")


@pytest.fixture(scope="module")
def models(digits_bundle, shapes_bundle, detector_bundle, multitask_bundle):
    loaded = load_models([f"digits={digits_bundle}", f"shapes={shapes_bundle}", f"det={detector_bundle}",
                          f"multi={multitask_bundle}"])
    detector = loaded["det"].predictor
    detector.score_threshold = 0.0  # a 4-step detector: explain whatever it finds, on any CPU
    detector.model.score_thresh = 0.0  # torchvision's own cut (0.05)
    return loaded


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(models)) as c:
        yield c


def _png_image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


def _hooks(model) -> int:
    return sum(len(getattr(m, name, {})) for m in model.modules() for name in HOOK_DICTS)


def _scene(size=(48, 40)) -> np.ndarray:
    from omnivis.data.builtin import make_shapes

    return np.asarray(Image.fromarray(make_shapes(1, 64, seed=3).scenes[0].image).resize(size))


def test_classify_map_explains_the_label_classify_answers(client, models):
    data, pixels = digit_png()
    label = client.post("/api/classify/digits", files={"image": ("d.png", data, "image/png")}).json()["label"]
    answer = client.post("/api/explain/digits", files={"image": ("d.png", data, "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["method"] == "gradcam" and body["layer"] and body["explained"] == "torch model"
    assert body["image"] == "d.png" and body["size"] == [8, 8]
    assert set(body["latency_ms"]) == {"queue", "model", "total"}
    (row,) = body["maps"]
    assert row["target"] == label and row["kind"] == "class" and 0 <= row["score"] <= 1
    assert 0 <= row["peak"][0] < 8 and 0 <= row["peak"][1] < 8 and 0.1 <= row["top10_mass"] <= 1
    overlay = _png_image(row["overlay_png"])
    assert overlay.size == (8, 8) and row["overlay_size"] == [8, 8] and overlay.mode == "RGB"
    # the same image as base64 JSON and as a raw body; another method and an explicit target
    as_json = client.post("/api/explain/digits", json={"image": base64.b64encode(data).decode(), "method": "eigencam"})
    assert as_json.status_code == 200 and as_json.json()["method"] == "eigencam"
    raw = client.post("/api/explain/digits?target=3", content=data, headers={"content-type": "image/png"}).json()
    assert raw["maps"][0]["target"] == "3"
    # nothing was hooked on the served model, and the private copy kept no hook either
    served = models["digits"].predictor.model
    private = client.app.state.explain_copies["digits"].predictor.model
    assert private is not served and _hooks(served) == 0 and _hooks(private) == 0


def test_segment_maps_one_per_predicted_class(client, models):
    pixels = _scene()
    body = client.post("/api/explain/shapes", files={"image": ("s.png", png_bytes(pixels), "image/png")},
                       data={"top_k": "3"}).json()
    classes = models["shapes"].predictor.classes
    assert 1 <= len(body["maps"]) <= 3 and body["size"] == [48, 40]
    targets = [m["target"] for m in body["maps"]]
    assert len(set(targets)) == len(targets) and set(targets) <= set(classes)
    for m in body["maps"]:
        assert m["kind"] == "pixels" and 0 <= m["peak"][0] < 48 and 0 <= m["peak"][1] < 40
        assert _png_image(m["overlay_png"]).size == (48, 40)
    chosen = classes[-1]
    one = client.post("/api/explain/shapes", files={"image": ("s.png", png_bytes(pixels), "image/png")},
                      data={"target": chosen}).json()
    assert [m["target"] for m in one["maps"]] == [chosen]


def test_detect_and_multitask_heads(client, models):
    pixels = _scene((64, 64))
    det = client.post("/api/explain/det", files={"image": ("s.png", png_bytes(pixels), "image/png")},
                      data={"top_k": "2"})
    assert det.status_code == 200, det.text
    assert 1 <= len(det.json()["maps"]) <= 2  # at threshold 0 there are always candidates
    for m in det.json()["maps"]:
        assert m["kind"] == "box" and m["target"] in models["det"].predictor.classes and len(m["box"]) == 4
        assert _png_image(m["overlay_png"]).size == (64, 64)
    upload = {"image": ("s.png", png_bytes(pixels), "image/png")}
    label = client.post("/api/multitask/multi", files=upload).json()["label"]
    cls = client.post("/api/explain/multi", files=upload).json()
    assert [m["target"] for m in cls["maps"]] == [label]
    seg = client.post("/api/explain/multi", files=upload, data={"head": "segment"}).json()
    assert seg["maps"] and all(m["kind"] == "pixels" for m in seg["maps"])


@pytest.mark.parametrize("fields, status, words", [
    ({"method": "gradcm"}, 422, "Did you mean gradcam"),
    ({"method": "rollout"}, 422, "rollout applies to ViT backbones"),
    ({"target": "eleven"}, 422, "target 'eleven' is not a class of this model"),
    ({"head": "segment"}, 422, "head applies to multitask bundles"),
    ({"colour": "red"}, 422, "unknown field 'colour'; this endpoint takes: head, layer, method"),
    ({"top_k": "0"}, 422, "'top_k' must be in 1..20"),
    ({"layer": "nope"}, 422, "no layer 'nope'"),
])
def test_bad_options_are_4xx_that_name_the_choices(client, fields, status, words):
    data, _ = digit_png()
    answer = client.post("/api/explain/digits", files={"image": ("d.png", data, "image/png")}, data=fields)
    assert answer.status_code == status and words in answer.json()["error"]["message"], answer.text
    assert "--" not in answer.json()["error"]["message"]


def test_unknown_model_wrong_task_and_bad_image(client):
    data, _ = digit_png()
    missing = client.post("/api/explain/nope", files={"image": ("d.png", data, "image/png")})
    assert missing.status_code == 404 and "loaded: digits, shapes, det, multi" in missing.json()["error"]["message"]
    fake = client.post("/api/explain/digits", files={"image": ("x.png", b"%PDF-1.4", "image/png")})
    assert fake.status_code == 415 and "not an image" in fake.json()["error"]["message"]


def test_generator_is_refused_with_the_tasks_that_are_explained(generator_bundle):
    with TestClient(create_app(load_models([f"gen={generator_bundle}"]))) as c:
        data, _ = digit_png()
        answer = c.post("/api/explain/gen", files={"image": ("d.png", data, "image/png")})
    assert answer.status_code == 400
    assert "explanations cover classify, segment, detect, multitask" in answer.json()["error"]["message"]


def test_classify_during_explanations_still_answers_right(client, models):
    data, pixels = digit_png()
    other, _ = digit_png(0)
    expected = {key: client.post("/api/classify/digits", files={"image": ("d.png", d, "image/png")}).json()["top_k"]
                for key, d in (("a", data), ("b", other))}
    failures: list[str] = []
    explained = []
    stop = threading.Event()

    def explain():
        while not stop.is_set():
            r = client.post("/api/explain/digits", files={"image": ("d.png", data, "image/png")},
                            data={"method": "gradcam++"})
            explained.append(r.status_code)
            if r.status_code != 200:
                failures.append(r.text)

    served = models["digits"].predictor.model
    worker = threading.Thread(target=explain)
    worker.start()
    try:
        for i in range(30):
            key, d = ("a", data) if i % 2 else ("b", other)
            got = client.post("/api/classify/digits", files={"image": ("d.png", d, "image/png")}).json()["top_k"]
            if got != expected[key]:
                failures.append(f"classify {key}: {got} != {expected[key]}")
            if _hooks(served):  # Grad-CAM's hooks live while a map is drawn: never on the served model
                failures.append(f"the served model has {_hooks(served)} hooks during an explanation")
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not failures, failures
    assert explained and _hooks(served) == 0
