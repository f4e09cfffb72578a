"""JSON and HTML reports: round-trips, escaping, self-contained images."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.metrics.report import (
    ReportSection,
    image_to_data_uri,
    write_html_report,
    write_json,
)


def _decode_data_uri(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))
    assert image.format == "PNG"
    return image


def test_write_json_round_trip_with_numpy_and_torch(tmp_path) -> None:
    data = {
        "zeta": np.float32(0.5),
        "alpha": np.int64(7),
        "matrix": np.array([[1, 2], [3, 4]]),
        "tensor": torch.tensor([0.25, 0.75]),
        "scalar_tensor": torch.tensor(3),
        "flag": np.bool_(True),
        "nested": {"name": "digits", "values": [np.float64(1.5)]},
    }
    out = write_json(data, tmp_path / "sub" / "metrics.json")
    text = out.read_text()
    loaded = json.loads(text)
    assert loaded == {
        "zeta": 0.5,
        "alpha": 7,
        "matrix": [[1, 2], [3, 4]],
        "tensor": [0.25, 0.75],
        "scalar_tensor": 3,
        "flag": True,
        "nested": {"name": "digits", "values": [1.5]},
    }
    assert list(loaded) == list(data)  # key order kept, not sorted
    assert text.startswith('{\n  "zeta"')  # indent=2
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_write_json_rejects_unknown_objects(tmp_path) -> None:
    with pytest.raises(TypeError, match="object"):
        write_json({"bad": object()}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_image_to_data_uri_upscales_tiny_and_downscales_large(tmp_path) -> None:
    digit = Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8), mode="L")
    small = _decode_data_uri(image_to_data_uri(digit))
    assert small.size == (64, 64)
    # NEAREST keeps hard pixel edges: each source pixel becomes an 8x8 block of one value.
    block = np.asarray(small)[:8, 8:16]
    assert (block == 4).all()

    large_path = tmp_path / "large.png"
    Image.new("RGB", (1000, 500), (200, 10, 10)).save(large_path)
    large = _decode_data_uri(image_to_data_uri(large_path, max_size=256))
    assert large.size == (256, 128)


def test_html_report_is_escaped_self_contained_and_has_values(tmp_path) -> None:
    png_path = tmp_path / "confusion.png"
    Image.new("RGB", (40, 30), (0, 128, 255)).save(png_path)
    digit = Image.new("L", (8, 8), 255)
    sections = [
        ReportSection(
            heading="Summary <b>",
            text="Model <script>alert('x')</script> & friends",
            table={"accuracy": 0.912345678, "num_samples": 360, "backbone": "resnet<tiny>"},
        ),
        ReportSection(
            heading="Per class",
            rows=[
                {"class": "zero", "precision": 1.0, "support": 36},
                {"class": "one", "precision": 0.87654321, "support": 35},
            ],
        ),
        ReportSection(
            heading="Plots and samples",
            images=[
                ("confusion matrix", str(png_path)),
                ("true 3 / pred 3 (0.99)", image_to_data_uri(digit)),
                ("true 5 / pred 8 (0.41)", digit),
            ],
        ),
    ]
    out = write_html_report(tmp_path / "report.html", "Eval <digits>", sections)
    page = out.read_text(encoding="utf-8")

    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; friends" in page
    assert "Eval &lt;digits&gt;" in page and "Summary &lt;b&gt;" in page
    assert "resnet&lt;tiny&gt;" in page

    # Table values, floats with 4 decimals; rows table with its columns.
    assert "0.9123" in page and "360" in page
    assert "<th>precision</th>" in page and "0.8765" in page and "1.0000" in page

    # The PNG file is embedded byte for byte: the report references nothing outside itself.
    embedded = base64.b64encode(png_path.read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{embedded}"' in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert "true 3 / pred 3 (0.99)" in page
    assert "http://" not in page and "https://" not in page
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".png"] == ["report.html"]


def test_html_report_missing_image_is_an_error(tmp_path) -> None:
    sections = [ReportSection(heading="x", images=[("gone", str(tmp_path / "missing.png"))])]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_html_report(tmp_path / "report.html", "t", sections)
    assert not (tmp_path / "report.html").exists()
