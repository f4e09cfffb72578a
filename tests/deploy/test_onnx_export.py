"""ONNX export: the file answers as PyTorch does, int8 stays close and says what it kept in float,
``--backend onnx`` gives the same predictions, and a wrong or broken file is a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnivis.cli import app
from omnivis.deploy.onnx_export import PARITY_BATCHES, export_bundle
from omnivis.deploy.runtime import OnnxGraph
from omnivis.errors import BundleError
from omnivis.inference.classify import ClassifyPredictor
from omnivis.inference.segment import SegmentPredictor
from omnivis.tasks.classify import train_classifier
from omnivis.tasks.segment import train_segmenter
from tests.conftest import tiny_classify_config
from tests.tasks.test_segment import tiny_segment_config

runner = CliRunner()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "run"
    train_classifier(tiny_classify_config(), out)
    return out


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "run"
    train_segmenter(tiny_segment_config(), out)
    return out


def _digit_images(n: int = 12) -> list[np.ndarray]:
    from sklearn.datasets import load_digits

    images = load_digits().images[-n:]
    return [(im * 255 / 16).astype(np.uint8) for im in images]


def test_classifier_export_matches_torch_at_every_batch_size(classifier):
    report = export_bundle(classifier)
    path = classifier / "model.onnx"
    assert report["file"] == str(path) and path.is_file()
    assert [row["batch"] for row in report["parity"]] == list(PARITY_BATCHES)
    for row in report["parity"]:
        assert row["same_answers"] == 1.0 and row["max_abs_difference"] < 1e-4
    assert json.loads((classifier / "export.json").read_text())["model.onnx"]["parity"] == report["parity"]

    graph = onnx.load(str(path)).graph
    (images,) = graph.input
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = images.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 16, 16]  # dynamic batch, 1 x 16 x 16

    torch_predictor = ClassifyPredictor.from_dir(classifier)
    onnx_predictor = ClassifyPredictor.from_dir(classifier)
    onnx_predictor.use_onnx(path)
    images = _digit_images()
    expected = torch_predictor.predict_proba(images)
    got = onnx_predictor.predict_proba(images)
    assert torch.allclose(expected, got, atol=1e-5)
    assert [r["label"] for r in torch_predictor.predict(images)] == [r["label"] for r in onnx_predictor.predict(images)]


def test_int8_export_is_smaller_stays_close_and_reports_its_tries(classifier, tmp_path):
    import tempfile

    scratch_before = set(Path(tempfile.gettempdir()).glob("omnivis-export-*"))
    out = tmp_path / "exports" / "int8.onnx"  # a folder that does not exist yet
    report = export_bundle(classifier, out=out, int8=True)
    assert set(Path(tempfile.gettempdir()).glob("omnivis-export-*")) == scratch_before  # no scratch left behind
    q = report["int8"]
    assert q["tries"] and q["tries"][0]["kept_in_float"] == []  # fully quantized first
    assert q["within_budget"] == (q["same_answers"] >= q["budget"])
    chosen = [t for t in q["tries"] if t["method"] == q["method"] and t["kept_in_float"] == q["kept_in_float"]]
    assert chosen and chosen[0]["same_answers"] == q["same_answers"]
    # every weight int8: a quarter of float's, plus scales; where the search kept layers in float to hold the
    # answers (which ones depends on the trained weights, so on the machine), still smaller than float
    limit = report["bytes"]["float"] / (2 if not q["kept_in_float"] else 1)
    assert report["bytes"]["int8"] < limit, (report["bytes"], q["kept_in_float"])
    nodes = {n.name for n in onnx.load(str(out)).graph.node}
    assert set(q["kept_in_float"]) <= nodes

    images = torch.stack([torch.from_numpy(im)[None] for im in _digit_images(64)])
    images = torch.nn.functional.interpolate(images.float(), size=16, mode="bilinear").round().to(torch.uint8)
    predictor = ClassifyPredictor.from_dir(classifier)
    with torch.inference_mode():
        expected = predictor.graph(images)
    got = OnnxGraph(out, channels=1, size=16)(images)
    assert (got[0] - expected[0]).abs().max() < 0.25  # probabilities stay close
    assert (got[2][:, 0] == expected[2][:, 0]).float().mean() >= 0.8


def test_segmenter_export_gives_the_same_masks_at_any_image_size(segmenter, tmp_path):
    report = export_bundle(segmenter)
    assert all(row["same_answers"] == 1.0 for row in report["parity"])
    torch_predictor = SegmentPredictor.from_dir(segmenter)
    onnx_predictor = SegmentPredictor.from_dir(segmenter)
    onnx_predictor.use_onnx(segmenter / "model.onnx")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8),
              rng.integers(0, 256, size=(45, 70, 3), dtype=np.uint8)]  # the bundle's size and another
    for expected, got in zip(torch_predictor.predict_masks(images), onnx_predictor.predict_masks(images)):
        assert expected.shape == got.shape
        assert (expected == got).mean() > 0.999  # float rounding may flip a pixel on a tie, nothing more


def test_cli_export_then_predict_with_the_onnx_backend(classifier, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, im in enumerate(_digit_images(4)):
        Image.fromarray(im).save(folder / f"{i}.png")
    result = runner.invoke(app, ["export", str(classifier), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "same answers" in result.output
    by_torch = runner.invoke(app, ["predict", str(classifier), str(folder), "--json"])
    by_onnx = runner.invoke(app, ["predict", str(classifier), str(folder), "--json", "--backend", "onnx",
                                  "--onnx", str(tmp_path / "m.onnx")])
    assert by_torch.exit_code == 0 and by_onnx.exit_code == 0, by_onnx.output
    a, b = json.loads(by_torch.stdout), json.loads(by_onnx.stdout)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b))


def test_wrong_or_broken_files_are_clear_errors(classifier, segmenter, tmp_path):
    export_bundle(segmenter)
    predictor = ClassifyPredictor.from_dir(classifier)
    with pytest.raises(BundleError, match="export this bundle again"):
        predictor.use_onnx(segmenter / "model.onnx")  # 3 x 32 x 32 input for a 1 x 16 x 16 bundle
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        predictor.use_onnx(broken)
    with pytest.raises(BundleError, match="no ONNX file here"):
        predictor.use_onnx(tmp_path / "missing.onnx")
    result = runner.invoke(app, ["predict", str(classifier), str(tmp_path), "--backend", "tensorrt"])
    assert result.exit_code != 0 and "--backend must be torch or onnx" in str(result.exception)


def test_tasks_without_an_onnx_graph_say_so(classifier, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(classifier, other)
    config = json.loads((other / "config.json").read_text())
    config["task"] = "align"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="cannot be exported yet"):
        export_bundle(other)


def test_eval_scores_the_exported_file_as_it_scores_the_bundle(classifier, segmenter, tmp_path):
    from omnivis.inference.classify import evaluate_classifier
    from omnivis.inference.segment import evaluate_segmenter

    export_bundle(classifier, out=tmp_path / "clf.onnx")
    export_bundle(segmenter, out=tmp_path / "seg.onnx")
    by_torch = evaluate_classifier(classifier, progress=False)
    by_onnx = evaluate_classifier(classifier, progress=False, onnx=tmp_path / "clf.onnx")
    assert by_onnx["accuracy"] == by_torch["accuracy"] and by_onnx["onnx"] == str(tmp_path / "clf.onnx")
    seg_torch = evaluate_segmenter(segmenter, progress=False)
    seg_onnx = evaluate_segmenter(segmenter, progress=False, onnx=tmp_path / "seg.onnx")
    assert abs(seg_onnx["miou"] - seg_torch["miou"]) < 1e-3
    result = runner.invoke(app, ["eval", str(classifier), "--onnx", str(tmp_path / "clf.onnx"), "--json",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == by_torch["accuracy"]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from omnivis.tasks.detect import train_detector
    from tests.tasks.test_detect import tiny_detect_config

    out = tmp_path_factory.mktemp("det") / "run"
    train_detector(tiny_detect_config(), out)
    return out


def test_detector_export_gives_the_same_detections_one_image_per_call(detector):
    from omnivis.inference.detect import DetectPredictor

    report = export_bundle(detector)
    (row,) = report["parity"]
    assert row["images"] == 7 and row["same_answers"] == 1.0 and row["max_abs_difference"] < 1e-3
    graph = onnx.load(str(detector / "model.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert all(o.type.tensor_type.shape.dim[0].dim_param for o in graph.output)  # as many detections as found

    by_torch = DetectPredictor.from_dir(detector)
    by_onnx = DetectPredictor.from_dir(detector)
    by_onnx.use_onnx(detector / "model.onnx")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8), rng.integers(0, 256, size=(90, 50, 3), dtype=np.uint8)]
    for expected, got in zip(by_torch.detect(images), by_onnx.detect(images)):
        assert len(expected["labels"]) == len(got["labels"])
        # an untrained detector ties many scores, so the two backends may list tied detections in
        # another order: match each detection to an unused one of the same class, score and box
        unused = set(range(len(got["labels"])))
        for label, score, box in zip(expected["labels"], expected["scores"], expected["boxes"]):
            match = next(j for j in sorted(unused) if got["labels"][j] == label and abs(got["scores"][j] - score) < 1e-4
                         and (got["boxes"][j] - box).abs().max() < 1e-2)  # pixels of the original image
            unused.remove(match)


def test_detector_int8_export_is_checked_detection_by_detection(detector, tmp_path):
    from omnivis.deploy.onnx_export import detection_agreement
    from omnivis.inference.detect import DetectPredictor

    float_file = export_bundle(detector, out=tmp_path / "float.onnx")["file"]
    predictor = DetectPredictor.from_dir(detector)
    rng = np.random.default_rng(2)
    images = predictor.prepare([rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8) for _ in range(4)])
    session = OnnxGraph(float_file, 3, 64)
    reference = [session(image[None]) for image in images]
    assert sum(len(r[0]) for r in reference) > 0
    again = [session(image[None]) for image in images]
    assert detection_agreement(reference, again) == (1.0, 0.0)  # a file agrees with itself
    no_detections = [tuple(t[:0] for t in r) for r in reference]
    assert detection_agreement(no_detections, again)[0] == 0.0  # every detection an extra

    report = export_bundle(detector, out=tmp_path / "int8.onnx", int8=True)
    int8 = report["int8"]
    assert int8["tries"] and 0.0 <= int8["same_answers"] <= 1.0 and int8["method"]
    assert int8["within_budget"] == (int8["same_answers"] >= int8["budget"])
    assert report["bytes"]["int8"] < report["bytes"]["float"]
    quantized = DetectPredictor.from_dir(detector)
    quantized.use_onnx(tmp_path / "int8.onnx")
    (answer,) = quantized.detect([rng.integers(0, 256, size=(80, 60, 3), dtype=np.uint8)])
    assert len(answer["labels"]) == len(answer["scores"]) == len(answer["boxes"])


def test_mask_rcnn_export_gives_the_same_detections_and_masks(tmp_path):
    from omnivis.inference.detect import DetectPredictor
    from omnivis.tasks.detect import train_detector
    from tests.tasks.test_detect import tiny_detect_config

    bundle = train_detector(tiny_detect_config(arch="maskrcnn", score_threshold=0.0), tmp_path / "run")
    report = export_bundle(bundle)
    assert report["outputs"] == ["boxes", "scores", "classes", "masks"]
    (row,) = report["parity"]
    assert row["same_answers"] == 1.0 and row["max_abs_difference"] < 1e-3
    by_torch, by_onnx = DetectPredictor.from_dir(bundle), DetectPredictor.from_dir(bundle)
    by_onnx.use_onnx(report["file"])
    from omnivis.data.detection import shapes_detection_data

    image = np.asarray(shapes_detection_data(1, 64, seed=5).records[0].source)
    image = np.asarray(Image.fromarray(image).resize((80, 70)))  # masks come back at the image's own size
    expected, got = by_torch.detect([image])[0], by_onnx.detect([image])[0]
    assert len(expected["masks"]) == len(got["masks"]) > 0 and expected["masks"].shape[1:] == (70, 80)
    # order-free: the union of the masks of each class is the same
    for label in expected["labels"].unique():
        union = [r["masks"][r["labels"] == label].any(0) for r in (expected, got)]
        assert (union[0] ^ union[1]).float().mean() < 0.01


@pytest.mark.parametrize("tasks", [("classify", "segment", "detect"), ("classify", "segment")])
def test_multitask_export_answers_as_the_bundle_does(tasks, tmp_path):
    """Every head in one file; predict_outputs through onnxruntime gives the torch backend's answers."""
    from omnivis.data.multitask import load_shapes_multitask
    from omnivis.inference.multitask import MultitaskPredictor
    from omnivis.tasks.multitask import train_multitask
    from tests.tasks.test_multitask import tiny_multitask_config

    bundle = train_multitask(tiny_multitask_config(tasks=tasks, trainer=dict(max_steps=3)), tmp_path / "run")
    report = export_bundle(bundle)
    expected_outputs = (["boxes", "scores", "det_classes"] if "detect" in tasks else []) + [
        "probabilities", "logits", "classes"]
    assert report["outputs"] == expected_outputs
    assert all(row["same_answers"] == 1.0 and row["max_abs_difference"] < 1e-3 for row in report["parity"])
    assert [row["batch"] for row in report["parity"]] == ([1] if "detect" in tasks else list(PARITY_BATCHES))
    outputs = {o.name: o.type.tensor_type.shape.dim[0] for o in onnx.load(report["file"]).graph.output}
    if "detect" in tasks:  # a row per detection for boxes; the other heads keep the one image of the call
        assert outputs["boxes"].dim_param and outputs["probabilities"].dim_value == 1 == outputs["classes"].dim_value
    by_torch, by_onnx = MultitaskPredictor.from_dir(bundle), MultitaskPredictor.from_dir(bundle)
    by_onnx.use_onnx(report["file"])
    scenes = load_shapes_multitask(3, 32, seed=7).images
    images = [np.asarray(Image.fromarray(scenes[0]).resize((45, 40))), *scenes[1:]]  # one of another size
    expected, got = by_torch.predict_outputs(images), by_onnx.predict_outputs(images)
    assert torch.allclose(expected["classify"], got["classify"], atol=1e-4)
    assert all(np.mean(a != b) < 0.01 for a, b in zip(expected["segment"], got["segment"]))
    assert expected["segment"][0].shape == (40, 45)
    for a, b in zip(expected.get("detect", []), got.get("detect", [])):
        assert torch.equal(a["labels"].sort().values, b["labels"].sort().values)
        assert torch.allclose(a["scores"].sort().values, b["scores"].sort().values, atol=1e-4)
    if "detect" not in tasks:
        int8 = export_bundle(bundle, int8=True)["int8"]
        assert int8["tries"] and 0.0 <= int8["same_answers"] <= 1.0


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
def test_the_other_detectors_export_too(arch, tmp_path):
    from omnivis.tasks.detect import train_detector
    from tests.tasks.test_detect import tiny_detect_config

    train_detector(tiny_detect_config(arch=arch), tmp_path / "run")
    (row,) = export_bundle(tmp_path / "run")["parity"]
    assert row["same_answers"] == 1.0 and row["max_abs_difference"] < 1e-3


def test_gan_decoder_export_makes_the_generators_images(tmp_path):
    """The exported decoder, fed the latents ``generate(seed)`` draws, gives ``generate``'s own pixels."""
    import onnxruntime as ort

    from omnivis.tasks.generate import train_generator
    from omnivis.tasks.generate.sample import GeneratorPredictor
    from tests.tasks.test_generate import tiny

    bundle = train_generator(tiny("gan", conditional=True), tmp_path / "gan")
    report = export_bundle(bundle)
    assert report["task"] == "generate" and set(report["inputs"]) == {"latents", "labels"}
    assert all(row["max_abs_difference"] == 0.0 for row in report["parity"])
    predictor = GeneratorPredictor.from_dir(bundle)
    expected = predictor.generate(5, "3", seed=11)  # (5, 8, 8, 1) uint8
    latents = torch.randn((5, predictor.net["z_dim"]), generator=torch.Generator().manual_seed(11))
    session = ort.InferenceSession(report["file"], providers=["CPUExecutionProvider"])
    images = session.run(None, {"latents": latents.numpy(), "labels": np.full(5, 3, dtype=np.int64)})[0]
    assert images.dtype == np.uint8 and np.array_equal(images.transpose(0, 2, 3, 1), expected)


def test_vqvae_exports_its_decoder_from_codes(tmp_path):
    """The exported file turns a code grid into the pixels the bundle's own decoder makes from it."""
    import onnxruntime as ort

    from omnivis.models.generative.vq import decode_indices, encode_indices
    from omnivis.tasks.generate import train_generator
    from omnivis.tasks.generate.sample import GeneratorPredictor
    from tests.tasks.test_generate import tiny

    bundle = train_generator(tiny("vqvae"), tmp_path / "vq")
    report = export_bundle(bundle)
    assert list(report["inputs"]) == ["codes"] and report["outputs"] == ["images"] and "codes" in report["outside_the_graph"]
    assert all(row["max_abs_difference"] <= 1 and row["same_answers"] == 1.0 for row in report["parity"])
    predictor = GeneratorPredictor.from_dir(bundle)
    size, channels = predictor.net["img_size"], predictor.net["channels"]
    photos = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes = encode_indices(predictor.model, photos)
    expected = ((decode_indices(predictor.model, codes, size // 4) + 1) * 127.5).round().to(torch.uint8).numpy()
    session = ort.InferenceSession(report["file"], providers=["CPUExecutionProvider"])
    (images,) = session.run(None, {"codes": codes.numpy()})
    assert images.dtype == np.uint8 and images.shape == expected.shape
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1


def test_diffusion_exports_its_denoiser_and_says_the_loop_stays_outside(generator_bundle):
    report = export_bundle(generator_bundle, out=generator_bundle / "denoiser.onnx")
    assert list(report["inputs"]) == ["sample", "timestep", "class_labels"] and report["outputs"] == ["noise"]
    assert "sampling loop" in report["outside_the_graph"]
    assert [row["batch"] for row in report["parity"]] == list(PARITY_BATCHES)
    assert all(row["max_abs_difference"] < 1e-4 for row in report["parity"])
    with pytest.raises(Exception, match="--int8 covers classify, segment and detect"):
        export_bundle(generator_bundle, int8=True)
