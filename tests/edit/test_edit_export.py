"""Edit bundles export their restoration network: uint8 in and out at any size, as the bundle edits a
tile; the tiling, inpainting's classical fill and enhance's statistics stay outside (documented)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from omnivis.data.degrade import classical_fill, context_statistics
from omnivis.deploy.onnx_export import export_bundle
from omnivis.errors import ConfigError
from omnivis.inference.edit import EditPredictor


@pytest.mark.parametrize("op", ["superres", "denoise", "inpaint", "enhance"])
def test_the_exported_network_edits_a_photo_as_the_bundle_does(edit_bundles, photo_folder, tmp_path, op):
    bundle = edit_bundles[op]
    report = export_bundle(bundle, out=tmp_path / f"{op}.onnx")
    assert report["task"] == "edit" and report["op"] == op and report["outputs"] == ["restored"]
    assert all(row["max_abs_difference"] <= 1 and row["same_answers"] > 0.999 for row in report["parity"])
    assert {row["batch"] for row in report["parity"]} == {1, 2, 3}  # dynamic batch, height and width

    predictor = EditPredictor.from_dir(bundle)
    photo = np.asarray(Image.open(next(photo_folder.glob("*.png"))).convert("RGB"))
    photo = photo[:40, :48]  # not the size it was exported at
    image = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
    feeds = {"images": image[None].numpy()}
    kwargs = {}
    if op == "inpaint":
        holes = torch.zeros((1, 40, 48), dtype=torch.uint8)
        holes[:, 10:22, 12:30] = 1
        image = classical_fill(image, holes)  # outside the graph, as the bundle does it
        feeds = {"images": image[None].numpy(), "holes": holes[None].numpy()}
        kwargs["mask"] = holes[0].numpy() * 255
    elif op == "enhance":
        feeds["statistics"] = context_statistics(image)[None].numpy()
    session = ort.InferenceSession(report["file"], providers=["CPUExecutionProvider"])
    (restored,) = session.run(None, feeds)
    expected = predictor.edit(photo, tile=0, **kwargs)  # the whole image in one pass
    assert restored.shape == (1, 3, *expected.shape[:2]) and restored.dtype == np.uint8
    assert np.abs(restored[0].transpose(1, 2, 0).astype(int) - expected.astype(int)).max() <= 1


def test_edit_export_refuses_int8_in_one_line(edit_bundles, tmp_path):
    with pytest.raises(ConfigError, match="export edit networks in fp32"):
        export_bundle(edit_bundles["denoise"], out=tmp_path / "x.onnx", int8=True)


def test_cli_exports_an_edit_bundle(edit_bundles, tmp_path):
    from typer.testing import CliRunner

    from omnivis.cli import app

    result = CliRunner().invoke(app, ["export", str(edit_bundles["enhance"]), "--out", str(tmp_path / "e.onnx")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "(enhance)" in flat and "statistics float32 ('batch', 6)" in flat and "outputs restored" in flat
    assert "images uint8 ('batch', 3, 'height', 'width')" in flat and (tmp_path / "e.onnx").is_file()

