"""What a reader skipped is kept: every input with its reason, on every data object, and one warning line.

Issue 11, item 7: training on a folder with 6 unreadable files printed Python's raw warning naming
five and "1 more", with its source line, and recorded nothing. Now every reader keeps each skipped
input as ``(name, reason)``, ``skipped_records`` turns them into ``skipped.json`` rows, and the
command line prints each warning as one ``warning: ...`` line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.console import format_warnings_one_line
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.coco import read_coco
from omnivis.data.masks import read_mask_folder
from omnivis.data.multitask import load_coco_multitask
from omnivis.data.skipped import skipped_message, skipped_records, warn_skipped
from omnivis.errors import SkippedInputWarning

BROKEN = [f"cat/broken{i}.jpg" for i in range(6)]


def _png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def _six_unreadable(root: Path) -> Path:
    for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"):
        _png(root / name)
    for name in BROKEN:
        (root / name).write_bytes(b"not an image")
    return root


def _ours(caught) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, SkippedInputWarning)]


def test_six_unreadable_files_keep_all_six_names_with_reasons(tmp_path):
    root = _six_unreadable(tmp_path / "pets")
    with pytest.warns(SkippedInputWarning) as caught:
        data = resolve_classification_data(str(root))  # the path `omnivis train classify --data DIR` takes
    assert len(data) == 4
    assert [name for name, _ in data.skipped] == BROKEN
    assert all(reason == "cannot identify image file" for _, reason in data.skipped)
    rows = skipped_records(data.skipped)
    assert rows == [{"path": name, "reason": "cannot identify image file"} for name in BROKEN]
    json.dumps(rows)  # what run.py writes as skipped.json
    assert data.subset([0, 2]).skipped == data.skipped  # a split keeps what the read left out

    (warning,) = _ours(caught)
    message = str(warning.message)
    assert "\n" not in message
    assert message.startswith(f"{root}: skipped 6 unreadable images: cat/broken0.jpg (cannot identify image file); ")
    assert "cat/broken2.jpg" in message and "cat/broken3.jpg" not in message and "; and 3 more; " in message
    assert message.endswith("a training run lists every one in skipped.json")
    assert warning.filename == __file__  # attributed to the caller of omnivis.data, not to a reader


def test_coco_names_each_bad_record(tmp_path):
    _png(tmp_path / "a.png", (40, 30))
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    anns += [{"id": 10 + k, "image_id": 1, "category_id": 1, "bbox": [1, 1, -2, 5]} for k in range(4)]
    anns += [{"id": 20, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},
             {"id": 21, "image_id": 5, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 2, "file_name": "gone.png", "width": 40, "height": 30}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    with pytest.warns(SkippedInputWarning) as caught:
        data = read_coco(path)
    assert data.skipped == [
        ("ann.json image id 2", f"file 'gone.png' not found in {tmp_path}"),
        *[(f"ann.json annotation id {10 + k}", "image 'a.png': box has negative width") for k in range(4)],
        ("ann.json annotation id 20", "image 'a.png': unknown category id 99"),
        ("ann.json annotation id 21", "points to image id 5, which is not in 'images'"),
    ]
    (warning,) = _ours(caught)
    assert str(warning.message).startswith(f"{path}: skipped 7 bad records: ann.json image id 2 (file 'gone.png'")
    assert "; and 4 more; " in str(warning.message)
    assert data.subset([]).skipped == data.skipped


def test_masks_name_each_bad_pair(tmp_path):
    for name in ("good", "nomask", "small", "broken"):
        _png(tmp_path / "images" / f"{name}.png", (10, 8))
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG cut")
    (tmp_path / "masks").mkdir()
    for name, size in (("good", (10, 8)), ("small", (4, 4)), ("broken", (10, 8))):
        Image.fromarray(np.zeros((size[1], size[0]), np.uint8), mode="L").save(tmp_path / "masks" / f"{name}.png")
    with pytest.warns(SkippedInputWarning, match="skipped 3 image/mask pairs: "):
        data = read_mask_folder(tmp_path)
    assert [s.name for s in data.samples] == ["good"]
    names = dict(data.skipped)
    assert list(names) == ["images/broken.png", "images/nomask.png", "masks/small.png"]
    assert names["images/broken.png"].startswith("unreadable image (")
    assert names["images/nomask.png"] == f"no mask nomask.png in {tmp_path / 'masks'}"
    assert names["masks/small.png"] == "mask is 4x4 but its image is 10x8"
    assert data.subset([0]).skipped == data.skipped


def test_multitask_keeps_coco_records_unreadable_images_and_csv_rows(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / name, (40, 30))
    (tmp_path / "c.png").write_bytes(b"not an image")
    images = [{"id": i + 1, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(("a.png", "b.png", "c.png"))]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 0, 5]}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,in\nb.png,out\nzzz.png,in\n")
    with pytest.warns(SkippedInputWarning) as caught:
        data = load_coco_multitask(ann, tmp_path, csv)
    assert len(_ours(caught)) == 3  # one line per source: the COCO records, the images, the CSV
    assert data.skipped == [
        ("ann.json annotation id 2", "image 'b.png': box has zero width"),
        ("c.png", "cannot identify image file"),
        ("labels.csv line 4", "'zzz.png' is not an image of the COCO file"),
    ]
    assert data.subset([1]).skipped == data.skipped
    assert (data + data.subset([0])).skipped == data.skipped * 2


def test_a_warning_prints_as_one_line_without_a_source_line(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    message = skipped_message([("x.png", "cannot identify image file")], "unreadable image", "DIR")
    python_format = warnings.formatwarning(message, SkippedInputWarning, __file__, 7, "    warn_skipped(...)")
    assert python_format.count("\n") == 2  # Python's own: "file:7: SkippedInputWarning: ..." plus the source line
    format_warnings_one_line()
    format_warnings_one_line()  # twice: still one wrapper
    ours = warnings.formatwarning(message, SkippedInputWarning, __file__, 7, "    warn_skipped(...)")
    assert ours == f"warning: {message}\n"
    assert warnings.formatwarning("two\nlines", UserWarning, str(Path(warn_skipped.__code__.co_filename)), 3) == (
        "warning: two lines\n"  # a plain UserWarning raised in omnivis' code is ours too
    )
    other = warnings.formatwarning("deprecated", DeprecationWarning, "/site-packages/torch/x.py", 3, "f()")
    assert other.startswith("/site-packages/torch/x.py:3: DeprecationWarning: deprecated")  # others: Python's


def test_the_command_line_sees_one_line_per_warning(tmp_path):
    root = _six_unreadable(tmp_path / "pets")
    script = (
        "import sys; from omnivis.console import format_warnings_one_line; format_warnings_one_line(); "
        "from omnivis.data.readers import read_class_folder; read_class_folder(sys.argv[1])"
    )
    done = subprocess.run([sys.executable, "-W", "default", "-c", script, str(root)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {root}: skipped 6 unreadable images: ")
