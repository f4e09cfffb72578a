"""A face bundle exported to ONNX: the same unit embeddings (flip test included) from onnxruntime."""

from __future__ import annotations

import pytest
import torch

from omnivis.deploy.onnx_export import export_bundle
from omnivis.errors import ConfigError
from omnivis.inference.face import FacePredictor
from tests.face.conftest import person_photos, save_untrained_face_bundle, write_people


def test_exported_face_model_gives_the_same_embeddings(tmp_path):
    bundle = save_untrained_face_bundle(tmp_path / "face", flip_test=True)
    people = write_people(tmp_path / "people", range(3), photos=3)
    report = export_bundle(bundle, calibration=str(people))
    assert report["outputs"] == ["embeddings"] and report["task"] == "face"
    assert [row["batch"] for row in report["parity"]] == [1, 3, 7]
    assert all(row["max_abs_difference"] < 1e-4 for row in report["parity"])
    photos = person_photos(0, 5, seed=4)
    torch_model = FacePredictor.from_dir(bundle)
    onnx_model = FacePredictor.from_dir(bundle)
    onnx_model.use_onnx(bundle / "model.onnx")
    expected, got = torch_model.embed(photos), onnx_model.embed(photos)
    assert torch.allclose(expected, got, atol=1e-4)
    assert torch.allclose(got.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ConfigError, match="export face models in fp32"):
        export_bundle(bundle, calibration=str(people), int8=True)
