"""``omnivis train generate``, ``generate``, ``interpolate`` and ``eval`` on a generator, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# one torch thread per subprocess: these nets are tiny, and on a shared 2-core machine two spinning
# OpenMP threads per process make every step several times slower
_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def omnivis(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "omnivis.cli", *args], capture_output=True, text=True, timeout=600,
                            env=_ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"omnivis {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


GEN = ["--data", "builtin:digits", "--img-size", "8", "--width", "16", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "clf"
    omnivis("train", "classify", "--data", "builtin:digits", "--img-size", "8", "--channels", "1", "--no-hflip",
            "--model", "omnivis_resnet_micro", "--epochs", "1", "--max-steps", "5", "--no-progress", "--out", str(out),
            "--json")
    return out


@pytest.mark.slow
def test_train_generate_eval_and_errors(tmp_path, reference, inception_weights):
    bundle = tmp_path / "diff"
    metrics = json.loads(omnivis("train", "generate", "--method", "diffusion", "--conditional", *GEN, "--max-steps", "4",
                                 "--sample-steps", "3", "--reference", str(reference), "--out", str(bundle),
                                 "--json").stdout)
    assert metrics["bundle"] == str(bundle) and metrics["fid"] >= 0 and 0 <= metrics["class_accuracy"] <= 1
    one = json.loads(omnivis("generate", str(bundle), "--n", "4", "--class", "3", "--steps", "3", "--seed", "5",
                             "--out", str(tmp_path / "a.png"), "--json").stdout)
    assert len(one["images"]) == 4 and Path(one["grid"]).exists()
    # same bundle, options and seed in this process (folder output): the same image, byte for byte
    from omnivis.tasks.generate import GeneratorPredictor
    from omnivis.tasks.generate.sample import save_images

    save_images(GeneratorPredictor.from_dir(bundle).generate(4, class_="3", steps=3, seed=5), tmp_path / "b")
    assert Path(one["images"][0]).read_bytes() == (tmp_path / "b" / "000.png").read_bytes()
    # training already evaluated with the recorded reference; eval also takes one explicitly
    report = json.loads(omnivis("eval", str(bundle), "--reference", str(reference), "--out", str(tmp_path / "eval"),
                                "--num-samples", "12", "--per-class", "2", "--json").stdout)
    assert report["reference"] == str(reference) and "kid_mean" in report and 0 <= report["class_accuracy"] <= 1
    assert report["num_real"] == report["num_generated"] == 12
    assert all(a in (0.0, 0.5, 1.0) for a in report["per_class_accuracy"].values())  # 2 samples per class
    assert Path(report["samples_png"]).exists() and Path(report["report_html"]).exists()
    # the standard Inception FID next to ours, from a weights file the user passes (few images: CPU)
    from omnivis.tasks.generate import evaluate_generator

    scores = evaluate_generator(bundle, reference=reference, num_samples=6, per_class=1, progress=False,
                                inception_weights=inception_weights)
    assert scores["inception_fid"] > 0 and "inception_kid_mean" in scores and scores["num_real"] == 6
    result = omnivis("eval", str(reference), "--inception-weights", str(inception_weights), check=False)
    assert result.returncode == 2 and "--inception-weights applies to generator bundles" in result.stderr
    result = omnivis("eval", str(reference), "--num-samples", "10", check=False)
    assert result.returncode == 2 and "--num-samples applies to generator bundles" in result.stderr
    # a library error is one line and exit code 2 (the other bad inputs: tests/tasks/test_generate.py)
    result = omnivis("predict", str(bundle), str(one["grid"]), check=False)
    assert result.returncode == 2 and "omnivis generate" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_vae_interpolates_between_two_images(tmp_path):
    import numpy as np
    from PIL import Image

    bundle = tmp_path / "vae"
    omnivis("train", "generate", "--method", "vae", *GEN, "--max-steps", "3", "--out", str(bundle), "--json")
    for name in ("a", "b"):
        Image.fromarray(np.random.default_rng(len(name)).integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    out = json.loads(omnivis("interpolate", str(bundle), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--frames",
                             "4", "--out", str(tmp_path / "walk"), "--json").stdout)
    assert len(out["images"]) == 4 and Path(out["grid"]).exists()


@pytest.mark.slow
def test_gan_trains_on_two_ddp_processes(tmp_path, reference):
    """Every train command takes the engine's scale-out options (generate lacked --strategy); the GAN
    takes its own two optimizer steps under DDP, and rank 0 alone evaluates and writes the bundle."""
    out = tmp_path / "gan-ddp"
    metrics = json.loads(omnivis("train", "generate", "--method", "gan", *GEN, "--max-steps", "4", "--accelerator", "cpu",
                                 "--devices", "2", "--strategy", "ddp", "--reference", str(reference), "--out", str(out),
                                 "--json").stdout)
    assert metrics["fid"] >= 0 and (out / "model.safetensors").exists()
    assert json.loads((out / "run_config.json").read_text())["trainer"]["strategy"] == "ddp"
