"""``omnivis train segment`` / ``train multitask`` -> ``eval --json`` -> ``predict`` end to end (subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import omnivis

TINY = ["--data", "builtin:shapes", "--img-size", "32", "--train-images", "48", "--val-images", "16",
        "--batch-size", "16", "--model", "omnivis_resnet_micro", "--accelerator", "cpu", "--no-progress"]


def _scenes(folder: Path, n: int = 3) -> Path:
    from omnivis.data.masks import load_shapes_segmentation

    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(load_shapes_segmentation(n, 32, seed=7).samples):
        Image.fromarray(s.image).save(folder / f"s{i}.png")
    return folder


@pytest.mark.slow
def test_train_eval_predict_segment(tmp_path):
    out = tmp_path / "seg"
    trained = json.loads(omnivis("train", "segment", *TINY, "--arch", "fpn", "--epochs", "2", "--out", str(out),
                                 "--json").stdout)
    assert trained["bundle"] == str(out) and 0.0 <= trained["miou"] <= 1.0

    metrics = json.loads(omnivis("eval", str(out), "--json").stdout)
    assert metrics["num_images"] == 16 and metrics["miou"] == pytest.approx(trained["miou"], abs=1e-6)
    assert set(metrics["per_class"]) == {"background", "circle", "square", "triangle"}
    assert Path(metrics["per_class_iou_png"]).exists() and (out / "eval.json").exists()

    images = _scenes(tmp_path / "imgs")
    results = json.loads(omnivis("predict", str(out), str(images), "--out", str(tmp_path / "viz"), "--json").stdout)
    assert [Path(r["image"]).name for r in results] == ["s0.png", "s1.png", "s2.png"]
    assert all("summary" in r and set(r["class_fractions"]) >= {"background"} for r in results)
    for name in ("s0", "s1", "s2"):
        overlay = Image.open(tmp_path / "viz" / f"{name}_overlay.png")
        index = Image.open(tmp_path / "viz" / f"{name}_mask.png")
        assert overlay.size == (32, 32) and index.mode == "P"
        fractions = results[int(name[1])]["class_fractions"]
        assert np.mean(np.asarray(index) == 0) == pytest.approx(fractions["background"], abs=1e-4)
    table = omnivis("predict", str(out), str(images / "s0.png")).stdout
    assert "s0.png" in table and "drawn predictions" in table


@pytest.mark.slow
def test_init_from_and_clear_errors(tmp_path):
    pre = tmp_path / "pre"
    omnivis("pretrain", "--method", "rotation", "--data", "builtin:shapes", "--max-images", "32", "--model",
            "omnivis_resnet_micro", "--img-size", "32", "--batch-size", "16", "--max-steps", "1", "--epochs", "1",
            "--accelerator", "cpu", "--out", str(pre), "--no-progress", "--json")
    out = tmp_path / "seg"
    trained = json.loads(omnivis("train", "segment", *TINY, "--max-steps", "2", "--init-from", str(pre), "--out",
                                 str(out), "--json").stdout)
    assert json.loads((out / "config.json").read_text())["init_from"] == str(pre) and "miou" in trained

    bad = omnivis("train", "segment", *TINY, "--arch", "pspnet", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "unknown arch 'pspnet'" in bad.stderr and "Traceback" not in bad.stderr
    bad = omnivis("train", "segment", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"), check=False)
    assert bad.returncode == 2 and "images/ and masks/" in bad.stderr


@pytest.mark.slow
def test_train_eval_predict_multitask(tmp_path):
    out = tmp_path / "mt"
    args = [a for a in TINY if a not in ("--arch",)]
    trained = json.loads(omnivis("train", "multitask", *args, "--seg-label-fraction", "0.5", "--max-steps", "3",
                                 "--out", str(out), "--json").stdout)
    assert trained["labelled_masks"] == 24 and {"accuracy", "miou"} <= set(trained)
    metrics = json.loads(omnivis("eval", str(out), "--json").stdout)
    assert metrics["accuracy"] == pytest.approx(trained["accuracy"]) and metrics["num_images"] == 16
    images = _scenes(tmp_path / "imgs", 2)
    results = json.loads(omnivis("predict", str(out), str(images), "--out", str(tmp_path / "viz"), "--json").stdout)
    assert all(r["label"] in ("circle", "square", "triangle") and "class_fractions" in r for r in results)
    assert (tmp_path / "viz" / "s0_overlay.png").exists() and (tmp_path / "viz" / "s1_mask.png").exists()
