"""``omnivis eval --groups``: per-group metrics of classify and segment bundles, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from omnivis.errors import ConfigError, OmnivisError
from tests.conftest import tiny_classify_config
from tests.test_cli import omnivis


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory) -> Path:
    from omnivis.tasks.classify import train_classifier

    return train_classifier(tiny_classify_config(), tmp_path_factory.mktemp("fair") / "digits")


@pytest.fixture(scope="module")
def shapes_bundle(tmp_path_factory) -> Path:
    from omnivis.tasks.segment import train_segmenter
    from tests.tasks.test_segment import tiny_segment_config

    return train_segmenter(tiny_segment_config(), tmp_path_factory.mktemp("fair") / "shapes")


def _write_groups(path: Path, names: list[str], group) -> Path:
    path.write_text("path,group\n" + "".join(f"{n},{group(i)}\n" for i, n in enumerate(names)), encoding="utf-8")
    return path


def _close(got: dict, want: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


@pytest.mark.slow
def test_classifier_groups_equal_each_subset_evaluated_directly(digits_bundle, tmp_path):
    from omnivis.data.builtin import resolve_classification_data
    from omnivis.inference.classify import evaluate_classifier

    data = resolve_classification_data("builtin:digits").subset(range(0, 1797, 9))  # 200 images
    csv = _write_groups(tmp_path / "g.csv", [s.name for s in data.samples], lambda i: "low" if i < 80 else "high")
    metrics = evaluate_classifier(digits_bundle, data=data, groups=csv, out_dir=tmp_path / "ev", progress=False)
    report = metrics["per_group"]
    assert report["counts"] == {"high": 120, "low": 80} and report["headline"] == ["accuracy", "macro_f1"]
    assert Path(report["png"]).exists()
    for group, idx in (("low", range(80)), ("high", range(80, 200))):
        alone = evaluate_classifier(digits_bundle, data=data.subset(list(idx)), progress=False)
        _close(report["groups"][group], alone, ("accuracy", "top5_accuracy", "macro_precision", "macro_recall",
                                                "macro_f1"))
        assert report["groups"][group]["num_samples"] == alone["num_samples"]
    low, high = report["groups"]["low"]["accuracy"], report["groups"]["high"]["accuracy"]
    assert report["largest_gap"]["accuracy"] == pytest.approx(abs(low - high))


@pytest.mark.slow
def test_cli_eval_groups_on_the_held_out_digits(digits_bundle, tmp_path):
    names = [f"digits/{i:04d}" for i in range(1797)]  # the whole data set: rows outside the split are skipped
    csv = _write_groups(tmp_path / "groups.csv", names, lambda i: "even" if i % 2 == 0 else "odd")
    out = tmp_path / "ev"
    table = omnivis("eval", str(digits_bundle), "--groups", str(csv), "--out", str(out)).stdout
    assert "per group" in table and "largest gap" in table and "ratio min/max" in table and "even" in table
    saved = json.loads((out / "eval.json").read_text())["per_group"]
    assert set(saved["groups"]) == {"even", "odd"} and sum(saved["counts"].values()) == saved["groups"]["even"][
        "num_samples"] + saved["groups"]["odd"]["num_samples"]
    assert saved["rows_outside_split"] == 1797 - sum(saved["counts"].values())
    assert (out / "per_group.png").exists() and saved["png"] == str(out / "per_group.png")

    one = _write_groups(tmp_path / "one.csv", names, lambda i: "all")
    result = omnivis("eval", str(digits_bundle), "--groups", str(one), check=False)
    assert result.returncode == 2 and "one.csv: every evaluated image is in group 'all'" in result.stderr


@pytest.mark.slow
def test_bad_groups_files_fail_before_inference(digits_bundle, tmp_path):
    from omnivis.inference.classify import evaluate_classifier

    names = [f"digits/{i:04d}" for i in range(1797)]
    with pytest.raises(OmnivisError, match="nope.csv: cannot read the groups file"):
        evaluate_classifier(digits_bundle, groups=tmp_path / "nope.csv", progress=False)
    wrong = _write_groups(tmp_path / "wrong.csv", ["cats/1.jpg", "dogs/2.jpg", *names], lambda i: "ab"[i % 2])
    with pytest.raises(OmnivisError, match=r"wrong.csv:2: 'cats/1.jpg' is not one of the \d+ evaluated images "
                                           r"\(and 1 more rows name no evaluated image\); the images are named like "
                                           r"'digits/\d+'"):
        evaluate_classifier(digits_bundle, groups=wrong, progress=False)
    short = _write_groups(tmp_path / "short.csv", names[:100], lambda i: "ab"[i % 2])
    with pytest.raises(OmnivisError, match=r"short.csv: no group for \d+ of the \d+ evaluated images: 'digits/"):
        evaluate_classifier(digits_bundle, groups=short, progress=False)


@pytest.mark.slow
def test_segmenter_groups_equal_each_subset_evaluated_directly(shapes_bundle, tmp_path):
    from omnivis.bundle import load_bundle
    from omnivis.inference.segment import _eval_data, evaluate_segmenter

    scenes, _ = _eval_data(load_bundle(shapes_bundle).config, None, "auto", False)
    names = [s.name for s in scenes.samples]  # shapes-seed1/0000 ...
    csv = _write_groups(tmp_path / "g.csv", names, lambda i: "first" if i < 6 else "rest")
    metrics = evaluate_segmenter(shapes_bundle, groups=csv, out_dir=tmp_path / "ev", progress=False)
    report = metrics["per_group"]
    assert report["counts"] == {"first": 6, "rest": len(names) - 6} and Path(report["png"]).exists()
    for group, idx in (("first", range(6)), ("rest", range(6, len(names)))):
        alone = evaluate_segmenter(shapes_bundle, data=scenes.subset(list(idx)), progress=False)
        _close(report["groups"][group], alone, ("miou", "dice", "pixel_accuracy"))
        assert report["groups"][group]["num_pixels"] == alone["num_pixels"]
    assert set(report["largest_gap"]) >= {"miou", "dice", "pixel_accuracy"}


@pytest.mark.parametrize("task", ["generate", "edit"])
def test_groups_is_refused_for_bundles_without_labelled_images(task, tmp_path, monkeypatch):
    import omnivis.bundle
    from omnivis.commands.evaluate import eval_command

    monkeypatch.setattr(omnivis.bundle, "load_bundle", lambda path: SimpleNamespace(task=task))
    options = dict(data=None, split="auto", out=tmp_path, strict=False, reference=None, inception_weights=None,
                   num_samples=None, per_class=None, images=None, labels=None, onnx=None, as_json=True)
    with pytest.raises(OmnivisError, match=rf"--groups applies to classify, segment, detect, multitask and face "
                                           rf"bundles; .* is a '{task}' bundle"):
        eval_command(tmp_path / "bundle", groups=tmp_path / "g.csv", **options)


def test_every_labelled_task_takes_groups():
    import inspect

    from omnivis.tasks.registry import get_task

    for task in ("classify", "segment", "detect", "multitask", "face"):
        assert "groups" in inspect.signature(get_task(task).evaluate).parameters, task


def test_one_group_is_refused_before_any_inference(tmp_path):
    from omnivis.metrics.fairness import read_group_table

    with pytest.raises(ConfigError, match="two groups or more"):
        read_group_table(_write_groups(tmp_path / "g.csv", ["a", "b"], lambda i: "x"), ["a", "b"])


@pytest.mark.slow
def test_detector_and_multitask_groups_equal_each_subset(tmp_path):
    from omnivis.bundle import load_bundle
    from omnivis.inference import detect, multitask
    from omnivis.tasks.detect import train_detector
    from omnivis.tasks.multitask import train_multitask
    from tests.tasks.test_detect import tiny_detect_config
    from tests.tasks.test_multitask import tiny_multitask_config

    bundle = train_detector(tiny_detect_config(), tmp_path / "det")
    scenes, _ = detect._eval_data(load_bundle(bundle).config, None, "auto", False)
    csv = _write_groups(tmp_path / "det.csv", [r.name for r in scenes.records], lambda i: "ab"[i % 2])
    report = detect.evaluate_detector(bundle, groups=csv, progress=False)["per_group"]
    alone = detect.evaluate_detector(bundle, data=scenes.subset(range(0, len(scenes.records), 2)), progress=False)
    _close(report["groups"]["a"], alone, ("map", "map50", "mar100", "num_images", "num_objects"))

    bundle = train_multitask(tiny_multitask_config(trainer={"max_steps": 2}), tmp_path / "mt")
    cfg = load_bundle(bundle).config
    scenes, _ = multitask._eval_data(cfg, None, "auto", False, int(cfg["img_size"]), None, None)
    csv = _write_groups(tmp_path / "mt.csv", [scenes.name(i) for i in range(len(scenes))], lambda i: "ab"[i < 10])
    report = multitask.evaluate_multitask(bundle, groups=csv, progress=False)["per_group"]
    alone = multitask.evaluate_multitask(bundle, data=scenes.subset(range(10)), progress=False)
    _close(report["groups"]["b"], alone, ("accuracy", "miou", "dice", "pixel_accuracy", "num_images"))
    assert report["counts"] == {"a": len(scenes) - 10, "b": 10}
