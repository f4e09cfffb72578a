"""``omnivis explain`` and ``predict --explain`` end to end: train a few steps, explain, check what must hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import TINY, omnivis


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "digits"
    omnivis("train", "classify", *TINY, "--epochs", "1", "--out", str(out))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three digits of different sizes and shapes (not square), so the peak goes through the crop's inverse."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digit-images")
    paths = []
    for i, (w, h) in enumerate([(40, 24), (24, 40), (32, 32)]):
        digit = (load_digits().images[i] * 16).astype(np.uint8)
        path = root / f"d{i}.png"
        Image.fromarray(digit).resize((w, h), Image.BILINEAR).save(path)
        paths.append(path)
    return paths


def test_explain_json_agrees_with_predict_and_batches(classifier, images, tmp_path):
    result = json.loads(omnivis("explain", str(classifier), *map(str, images), "--sanity", "--json",
                                "--out", str(tmp_path / "a")).stdout)
    single = json.loads(omnivis("explain", str(classifier), *map(str, images), "--json", "--batch-size", "1",
                                "--out", str(tmp_path / "b")).stdout)
    predicted = json.loads(omnivis("predict", str(classifier), *map(str, images), "--json").stdout)
    assert result["method"] == "gradcam" and result["sanity"]["maps"] == 3
    for r, s, p, path in zip(result["results"], single["results"], predicted, images):
        (e,) = r["explanations"]
        assert (e["target"], e["score"]) == (p["label"], pytest.approx(p["score"], abs=1e-5))
        width, height = Image.open(path).size
        assert r["size"] == [width, height] and 0 <= e["peak"][0] < width and 0 <= e["peak"][1] < height
        assert 0.1 <= e["top10_mass"] <= 1.0 or e["top10_mass"] == 0.0
        assert Path(e["overlay"]).is_file()
        assert s["explanations"][0]["peak"] == e["peak"]  # batch of 1 == batch of 3
    assert (tmp_path / "a" / "report.html").read_text().count("<img") >= 3
    assert json.loads((tmp_path / "a" / "explanations.json").read_text())["results"][0]["image"] == str(images[0])


def test_explain_held_out_images_with_a_target_and_predict_explain(classifier, tmp_path):
    out = json.loads(omnivis("explain", str(classifier), "--target", "3", "--limit", "5", "--method", "xgradcam",
                             "--json", "--out", str(tmp_path)).stdout)
    assert len(out["results"]) == 5 and {e["target"] for r in out["results"] for e in r["explanations"]} == {"3"}
    image = tmp_path / "one.png"
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(image)
    predicted = json.loads(omnivis("predict", str(classifier), str(image), "--explain", "gradcam", "--json",
                                   "--out", str(tmp_path / "pred")).stdout)
    (map_row,) = predicted[0]["explanation"]["maps"]
    assert map_row["target"] == predicted[0]["label"] and Path(map_row["overlay"]).is_file()


def test_explain_errors_name_the_choices(classifier, images):
    cases = [
        (["--method", "rollout"], "rollout applies to ViT backbones"),
        (["--head", "segment"], "--head applies to multitask bundles"),
    ]  # the other errors (layer, target, method) are checked in-process in test_explain.py
    for args, message in cases:
        result = omnivis("explain", str(classifier), str(images[0]), *args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_explain_a_segmenter_per_class(tmp_path):
    out = tmp_path / "seg"
    omnivis("train", "segment", "--data", "builtin:shapes", "--img-size", "32", "--epochs", "1", "--max-steps", "4",
            "--no-progress", "--out", str(out))
    result = json.loads(omnivis("explain", str(out), "--limit", "3", "--top-k", "2", "--sanity", "--json",
                                "--out", str(tmp_path / "maps")).stdout)
    classes = json.loads((out / "config.json").read_text())["classes"]
    assert len(result["results"]) == 3
    for r in result["results"]:
        assert 1 <= len(r["explanations"]) <= 2
        for e in r["explanations"]:
            assert e["kind"] == "pixels" and e["target"] in classes and 0 < e["area"] <= 1
    assert "mean_spearman" in result["sanity"]
