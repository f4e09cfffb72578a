"""Maps for detectors (one per box) and face models (the similarity to a compared photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.errors import ConfigError
from omnivis.inference.explain_run import explain_images
from omnivis.inference.explain_tasks import adapter_for


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    from omnivis.tasks.detect import train_detector
    from tests.tasks.test_detect import tiny_detect_config

    return train_detector(tiny_detect_config(trainer=dict(max_steps=4)), tmp_path_factory.mktemp("explain") / "det")


def test_detector_maps_one_per_box_in_image_pixels_and_batches(detector):
    from omnivis.data.builtin import make_shapes
    from omnivis.inference.detect import DetectPredictor

    predictor = DetectPredictor.from_dir(detector)
    predictor.score_threshold = 0.0  # a 4-step detector: explain whatever it finds
    adapter = adapter_for(predictor)
    photos = [Image.fromarray(s.image).resize((96, 48)) for s in make_shapes(3, 64, seed=5).scenes]
    together = explain_images(adapter, photos, top_k=2, batch_size=3)
    alone = [explain_images(adapter, [p], top_k=2)["results"][0] for p in photos]
    assert sum(len(r["explanations"]) for r in together["results"]) == 6  # FCOS always has 2 candidates here
    for result, single in zip(together["results"], alone):
        assert result["size"] == [96, 48]
        for e, s in zip(result["explanations"], single["explanations"]):
            assert e["kind"] == "box" and e["target"] in predictor.classes
            x0, y0, x1, y1 = e["box"]
            assert 0 <= x0 <= x1 <= 96 and 0 <= y0 <= y1 <= 48
            assert 0 <= e["peak"][0] < 96 and 0 <= e["peak"][1] < 48
            assert e["peak"] == s["peak"] and e["box"] == pytest.approx(s["box"], abs=0.05)
            assert e["score"] == pytest.approx(s["score"], abs=1e-4)
    with pytest.raises(ConfigError, match="--target 'hexagon' is not a class"):
        explain_images(adapter, photos[:1], target="hexagon")


def test_face_maps_explain_the_similarity_to_the_compared_photo(tmp_path):
    from omnivis.inference.face import FacePredictor
    from tests.face.conftest import person_photos, save_untrained_face_bundle

    bundle = save_untrained_face_bundle(tmp_path / "face")
    predictor = FacePredictor.from_dir(bundle)
    reference = person_photos(0, 1, seed=1)[0]
    photos = person_photos(0, 2, seed=2) + person_photos(3, 1, seed=2)
    report = explain_images(adapter_for(predictor, compare=reference), photos)
    verified = predictor.verify([reference] * 3, photos)
    for result, decision in zip(report["results"], verified):
        (e,) = result["explanations"]
        assert e["kind"] == "similarity" and e["score"] == pytest.approx(decision["score"], abs=1e-5)
        assert e["same"] == decision["same"]
    assert np.isfinite(np.stack(report["maps"])).all()
    with pytest.raises(ConfigError, match="--compare PHOTO applies to face bundles"):
        adapter_for(predictor)
    with pytest.raises(ConfigError, match="--target does not apply to face bundles"):
        explain_images(adapter_for(predictor, compare=reference), photos[:1], target="p00")
