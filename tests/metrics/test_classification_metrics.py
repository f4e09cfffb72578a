"""Classification metrics against independent references (hand counts and scikit-learn)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from omnivis.metrics.classification import (
    classification_metrics,
    plot_confusion_matrix,
    plot_training_curves,
)

CLASSES = ["cat", "dog", "bird"]
# 8 samples, 3 classes; predictions chosen so every class has errors.
TARGETS = [0, 0, 0, 1, 1, 1, 2, 2]
PREDS = [0, 0, 1, 1, 1, 2, 2, 0]
# Hand-counted confusion matrix: rows = true, cols = predicted.
EXPECTED_CONFUSION = [
    [2, 1, 0],
    [0, 2, 1],
    [1, 0, 1],
]


def _probs_for(preds: list[int], num_classes: int) -> torch.Tensor:
    """One-hot-ish probabilities whose argmax is ``preds``."""
    probs = torch.full((len(preds), num_classes), 0.1 / (num_classes - 1))
    probs[torch.arange(len(preds)), torch.tensor(preds)] = 0.9
    return probs


def test_metrics_match_hand_counts_and_sklearn() -> None:
    probs = _probs_for(PREDS, 3)
    result = classification_metrics(probs, torch.tensor(TARGETS), CLASSES)

    assert result["confusion_matrix"] == EXPECTED_CONFUSION
    assert result["num_samples"] == 8
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["accuracy"] == pytest.approx(accuracy_score(TARGETS, PREDS))
    assert result["macro_f1"] == pytest.approx(f1_score(TARGETS, PREDS, average="macro"))
    assert result["macro_precision"] == pytest.approx(precision_score(TARGETS, PREDS, average="macro"))
    assert result["macro_recall"] == pytest.approx(recall_score(TARGETS, PREDS, average="macro"))
    # C <= 5: top-5 is top-C, trivially 1.0, and still reported.
    assert result["top5_accuracy"] == 1.0

    # Per class by hand: cat P=2/3 R=2/3, dog P=2/3 R=2/3, bird P=1/2 R=1/2.
    assert result["per_class"]["cat"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["dog"]["recall"] == pytest.approx(2 / 3)
    assert result["per_class"]["bird"]["f1"] == pytest.approx(0.5)
    sk_f1 = f1_score(TARGETS, PREDS, average=None)
    for index, name in enumerate(CLASSES):
        assert result["per_class"][name]["f1"] == pytest.approx(sk_f1[index])
    assert [result["per_class"][name]["support"] for name in CLASSES] == [3, 3, 2]
    assert sum(entry["support"] for entry in result["per_class"].values()) == result["num_samples"]


def test_result_is_plain_json() -> None:
    result = classification_metrics(_probs_for(PREDS, 3), torch.tensor(TARGETS), CLASSES)
    assert json.loads(json.dumps(result)) == result
    assert isinstance(result["accuracy"], float)
    assert isinstance(result["confusion_matrix"][0][0], int)
    assert isinstance(result["per_class"]["cat"]["support"], int)


def test_top5_with_more_than_five_classes() -> None:
    num_classes = 7
    # Scores descend with class index, so the top-5 set is {0..4} for every sample.
    probs = torch.linspace(1.0, 0.1, num_classes).repeat(4, 1)
    probs = probs / probs.sum(dim=1, keepdim=True)
    targets = torch.tensor([0, 4, 5, 6])  # top-1 hit, top-5 hit, two misses
    result = classification_metrics(probs, targets, [f"c{i}" for i in range(num_classes)])
    assert result["accuracy"] == pytest.approx(1 / 4)
    assert result["top5_accuracy"] == pytest.approx(2 / 4)
    assert sum(entry["support"] for entry in result["per_class"].values()) == 4


def test_class_absent_everywhere_is_left_out_of_macro_like_sklearn() -> None:
    targets = [0, 1, 1, 0]
    preds = [0, 1, 0, 0]
    result = classification_metrics(_probs_for(preds, 3), torch.tensor(targets), CLASSES)
    assert result["macro_f1"] == pytest.approx(f1_score(targets, preds, average="macro"))
    assert result["per_class"]["bird"]["support"] == 0


@pytest.mark.parametrize(
    ("probs", "targets", "classes", "message"),
    [
        (torch.rand(4, 3), torch.tensor([0, 1, 2]), CLASSES, r"\(4, 3\).*\(3,\)"),
        (torch.rand(4, 2), torch.tensor([0, 1, 0, 1]), CLASSES, "C = 2 columns but 3 class names"),
        (torch.rand(4), torch.tensor([0, 1, 0, 1]), CLASSES, r"\(N, C\), got \(4,\)"),
        (torch.rand(2, 3), torch.tensor([0, 3]), CLASSES, r"\[0, 2\]"),
        (torch.rand(0, 3), torch.zeros(0, dtype=torch.long), CLASSES, "empty"),
    ],
)
def test_bad_inputs_raise_value_error(probs, targets, classes, message) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(probs, targets, classes)


def _assert_png(path, min_bytes: int = 2000) -> tuple[int, int]:
    assert path.is_file()
    assert path.stat().st_size > min_bytes
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_plot_confusion_matrix_writes_png(tmp_path) -> None:
    out = plot_confusion_matrix(EXPECTED_CONFUSION, CLASSES, tmp_path / "plots" / "confusion.png")
    width, height = _assert_png(out)
    assert width > 200 and height > 200
    # Only the final file remains: the temporary file was moved into place.
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]


def test_plot_confusion_matrix_many_classes_and_counts(tmp_path) -> None:
    classes = [f"class_{i:02d}" for i in range(25)]
    matrix = np.random.default_rng(0).integers(0, 5, size=(25, 25))
    out = plot_confusion_matrix(matrix, classes, tmp_path / "cm.png", normalize=False, title="raw <counts>")
    _assert_png(out)


def test_plot_confusion_matrix_rejects_wrong_shape(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        plot_confusion_matrix([[1, 2], [3, 4]], CLASSES, tmp_path / "cm.png")


SPARSE_METRICS_CSV = """epoch,step,train/loss,val/loss,val/accuracy,lr-AdamW
0,9,1.20,,,0.001
0,19,0.95,,,0.001
0,19,,1.05,0.55,
1,29,0.70,,,0.0005
1,39,0.52,,,0.0005
1,39,,0.80,0.72,
"""


def test_plot_training_curves_from_sparse_csv(tmp_path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(SPARSE_METRICS_CSV)
    out = plot_training_curves(csv_path, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    width, height = _assert_png(out)
    assert width > 2 * height  # three panels side by side: losses, metrics, learning rate


@pytest.mark.parametrize("content", ["", "epoch,step,train/loss\n", "epoch,step,train/loss\n0,1,\n0,2,nan\n"])
def test_plot_training_curves_returns_none_without_numbers(tmp_path, content) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(content)
    assert plot_training_curves(csv_path, tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()
