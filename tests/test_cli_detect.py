"""``omnivis train detect`` -> ``eval`` -> ``predict`` as a user runs them (subprocesses, real exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.test_cli import omnivis

TINY = ["--model", "omnivis_resnet_micro", "--img-size", "64", "--num-train", "16", "--num-test", "8",
        "--batch-size", "8", "--epochs", "1", "--max-steps", "4", "--no-progress"]


@pytest.mark.slow
def test_train_eval_predict_end_to_end(tmp_path):
    out = tmp_path / "det"
    trained = json.loads(omnivis("train", "detect", "--data", "builtin:shapes", *TINY, "--out", str(out), "--json").stdout)
    assert trained["bundle"] == str(out) and 0.0 <= trained["map50"] <= 1.0 and trained["num_images"] == 8

    metrics = json.loads(omnivis("eval", str(out), "--json").stdout)
    assert metrics["num_images"] == 8 and set(metrics["per_class"]) == {"circle", "square", "triangle"}
    assert Path(metrics["pr_curve_png"]).exists() and (out / "eval.json").exists()
    assert metrics["map"] == pytest.approx(trained["map"], abs=1e-6)  # the same test scenes (seed 1)

    from omnivis.data.builtin import make_shapes

    images = tmp_path / "images"
    images.mkdir()
    for i, scene in enumerate(make_shapes(2, 64, seed=9).scenes):
        Image.fromarray(scene.image).save(images / f"scene{i}.png")
    drawn = tmp_path / "drawn"
    results = json.loads(omnivis("predict", str(out), str(images), "--out", str(drawn), "--json").stdout)
    assert [Path(r["image"]).name for r in results] == ["scene0.png", "scene1.png"]
    assert all(isinstance(r["detections"], list) and r["summary"] for r in results)
    for name in ("scene0.png", "scene1.png"):
        with Image.open(drawn / name) as im:
            assert im.size == (256, 256)  # 64 px scenes are drawn 4x enlarged so labels can be read
    assert isinstance(json.loads((drawn / "predictions.json").read_text()), list)
    # --score-threshold: 0 keeps every detection the model returns, 1 none; results stay sorted by score
    everything = json.loads(omnivis("predict", str(out), str(images), "--score-threshold", "0", "--json").stdout)
    nothing = json.loads(omnivis("predict", str(out), str(images), "--score-threshold", "1", "--json").stdout)
    assert all(len(a["detections"]) >= len(r["detections"]) for a, r in zip(everything, results))
    assert all(r["detections"] == [] or all(d["score"] >= 1.0 for d in r["detections"]) for r in nothing)
    # eval --out writes what it scored, as COCO results another tool can re-score
    scored = json.loads((out / "eval_predictions.json").read_text())
    assert all({"image_id", "category_id", "bbox", "score"} <= set(d) for d in scored)

    table = omnivis("predict", str(out), str(images / "scene0.png")).stdout
    assert "scene0.png" in table and "drawn predictions" in table  # default out: BUNDLE/predictions
    assert (out / "predictions" / "scene0.png").exists()


def test_bad_inputs_are_one_line_errors(tmp_path):
    missing = omnivis("train", "detect", "--data", str(tmp_path / "nope.json"), "--out", str(tmp_path / "r"), check=False)
    assert missing.returncode == 2 and "COCO annotations file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    arch = omnivis("train", "detect", "--arch", "yolo", "--out", str(tmp_path / "r2"), check=False)
    assert arch.returncode == 2 and "unknown detector arch 'yolo'" in arch.stderr


@pytest.mark.slow
def test_two_process_ddp(tmp_path):
    """At 64 px the FPN does not read the backbone's last stage, whose weights then get no gradient:
    plain DDP stops at the second step; detection runs DDP with find_unused_parameters."""
    out = tmp_path / "ddp"
    metrics = json.loads(omnivis("train", "detect", "--data", "builtin:shapes", *TINY, "--accelerator", "cpu",
                                 "--devices", "2", "--strategy", "ddp", "--out", str(out), "--json").stdout)
    assert "map50" in metrics and (out / "model.safetensors").exists()
