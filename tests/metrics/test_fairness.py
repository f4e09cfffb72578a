"""``omnivis.metrics.fairness``: the groups CSV, per-group metrics, gaps and ratios (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnivis.errors import ConfigError, DataError
from omnivis.metrics.classification import classification_metrics
from omnivis.metrics.fairness import (
    GroupTable,
    gap_and_ratio,
    group_report,
    per_group_metrics,
    plot_group_metrics,
    read_group_table,
)

NAMES = ["cats/1.jpg", "cats/2.jpg", "dogs/1.jpg", "dogs/3.jpg"]


def _csv(tmp_path, text: str, name: str = "groups.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _files(tmp_path):
    root = tmp_path / "data"
    return [root / n for n in NAMES]


def test_rows_match_names_paths_and_unambiguous_file_names(tmp_path):
    sources = _files(tmp_path)
    text = f"path,group\ncats/1.jpg,a\n{sources[1]},b\ndata/dogs/1.jpg,a\n3.jpg,b\n"
    table = read_group_table(_csv(tmp_path, text), NAMES, sources)
    assert table.groups == ["a", "b", "a", "b"] and table.outside == 0
    assert {g: idx.tolist() for g, idx in table.subsets().items()} == {"a": [0, 2], "b": [1, 3]}


def test_header_is_optional_and_builtin_names_match(tmp_path):
    table = read_group_table(_csv(tmp_path, "digits/0000,x\ndigits/0001,y\n"), ["digits/0000", "digits/0001"])
    assert table.groups == ["x", "y"]


def test_rows_for_images_outside_the_split_are_skipped_and_counted(tmp_path):
    text = "path,group\ndigits/0000,x\ndigits/0001,y\ndigits/0002,x\n"
    table = read_group_table(_csv(tmp_path, text), ["digits/0000", "digits/0001"], outside=[("digits/0002", None)])
    assert table.groups == ["x", "y"] and table.outside == 1


def test_a_row_naming_no_evaluated_image_names_the_first_and_counts_the_rest(tmp_path):
    path = _csv(tmp_path, "path,group\ncats/1.jpg,a\ncats/2.jpg,b\ndogs/1.jpg,a\ndogs/3.jpg,b\n"
                          "birds/9.jpg,a\nx.jpg,b\n")
    with pytest.raises(DataError, match=r"groups.csv:6: 'birds/9.jpg' is not one of the 4 evaluated images "
                                        r"\(and 1 more rows name no evaluated image\)"):
        read_group_table(path, NAMES, _files(tmp_path))


def test_evaluated_images_missing_from_the_csv_are_named(tmp_path):
    path = _csv(tmp_path, "path,group\ncats/1.jpg,a\ncats/2.jpg,b\n")
    with pytest.raises(DataError, match=r"no group for 2 of the 4 evaluated images: 'dogs/1.jpg', 'dogs/3.jpg'"):
        read_group_table(path, NAMES, _files(tmp_path))


def test_one_group_is_a_config_error(tmp_path):
    path = _csv(tmp_path, "".join(f"{n},all\n" for n in NAMES))
    with pytest.raises(ConfigError, match=r"groups.csv: every evaluated image is in group 'all'"):
        read_group_table(path, NAMES, _files(tmp_path))


@pytest.mark.parametrize("text, message", [
    ("path,group\ncats/1.jpg\n", r"groups.csv:2: expected two columns 'path,group'"),
    ("path,group\ncats/1.jpg,a,extra\n", r"groups.csv:2: expected two columns"),
    ("path,group\ncats/1.jpg, \n", r"groups.csv:2: expected two columns"),
    ("path,group\n", r"groups.csv: no rows"),
    ("path,group\n1.jpg,a\n", r"groups.csv:2: '1.jpg' names 2 images \(cats/1.jpg, dogs/1.jpg\)"),
    ("cats/1.jpg,a\ncats/1.jpg,b\n", r"groups.csv:2: 'cats/1.jpg' is in group 'b' here but 'a'"),
])
def test_malformed_csv(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_group_table(_csv(tmp_path, text), NAMES, _files(tmp_path))


def test_unreadable_csv(tmp_path):
    with pytest.raises(DataError, match=r"missing.csv: cannot read the groups file"):
        read_group_table(tmp_path / "missing.csv", NAMES)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match=r"binary.csv: cannot read the groups file"):
        read_group_table(binary, NAMES)


def test_gap_and_ratio_known_answer():
    groups = {"a": {"accuracy": 0.9, "map": -1.0, "num_images": 10, "miou": None},
              "b": {"accuracy": 0.6, "map": 0.5, "num_images": 30, "miou": 0.4},
              "c": {"accuracy": 0.75, "map": 0.25, "num_images": 5, "miou": float("nan")}}
    gaps, ratios = gap_and_ratio(groups)
    assert gaps == {"accuracy": pytest.approx(0.3), "map": pytest.approx(0.25)}  # -1 (COCO: none), counts left out
    assert ratios == {"accuracy": pytest.approx(0.6 / 0.9), "map": pytest.approx(0.5)}
    assert "miou" not in gaps  # one group with a number is no comparison
    assert gap_and_ratio({"a": {"x": 0.0}, "b": {"x": 0.0}}) == ({"x": 0.0}, {"x": 1.0})
    assert gap_and_ratio({"a": {"x": 0.0}, "b": {"x": 0.5}})[1] == {"x": 0.0}


def _toy_predictions(n: int = 60, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, classes, generator=generator).softmax(dim=1)
    targets = torch.randint(0, classes, (n,), generator=generator)
    return probs, targets, [str(c) for c in range(classes)]


def test_one_group_of_everything_equals_the_overall_metrics():
    probs, targets, classes = _toy_predictions()

    def score(idx: np.ndarray) -> dict:
        return classification_metrics(probs[torch.from_numpy(idx)], targets[torch.from_numpy(idx)], classes)

    report = per_group_metrics(score, {"all": np.arange(len(targets))})
    assert report["groups"]["all"] == classification_metrics(probs, targets, classes)
    assert report["counts"] == {"all": len(targets)} and report["largest_gap"] == {}


def test_each_group_equals_its_subset_scored_directly(tmp_path):
    probs, targets, classes = _toy_predictions()
    names = [f"im{i}" for i in range(len(targets))]
    path = _csv(tmp_path, "".join(f"{n},{'left' if i < 25 else 'right'}\n" for i, n in enumerate(names)))
    table = read_group_table(path, names)

    def score(idx: np.ndarray) -> dict:
        return classification_metrics(probs[torch.from_numpy(idx)], targets[torch.from_numpy(idx)], classes)

    report = group_report(score, table, ("accuracy", "macro_f1"), tmp_path)
    assert report["groups"]["left"] == classification_metrics(probs[:25], targets[:25], classes)
    assert report["groups"]["right"] == classification_metrics(probs[25:], targets[25:], classes)
    assert report["counts"] == {"left": 25, "right": 35} and report["csv"] == str(path)
    left, right = report["groups"]["left"]["accuracy"], report["groups"]["right"]["accuracy"]
    assert report["largest_gap"]["accuracy"] == pytest.approx(abs(left - right))
    assert report["ratio"]["accuracy"] == pytest.approx(min(left, right) / max(left, right))
    assert (tmp_path / "per_group.png").stat().st_size > 0 and report["png"] == str(tmp_path / "per_group.png")


def test_plot_shows_missing_values(tmp_path):
    report = {"groups": {"a": {"map": 0.5}, "b": {"map": -1.0}, "c": {"map": 0.25}}, "counts": {"a": 1, "b": 2, "c": 3}}
    report["largest_gap"], report["ratio"] = gap_and_ratio(report["groups"])
    path = plot_group_metrics(report, ["map", "not_a_metric"], tmp_path / "sub" / "g.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_table_subsets_are_sorted_by_group_name():
    table = GroupTable(["b", "a", "b"], "g.csv")
    assert list(table.subsets()) == ["a", "b"] and table.subsets()["b"].tolist() == [0, 2]
