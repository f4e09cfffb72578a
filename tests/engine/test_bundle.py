from __future__ import annotations

import json

import pytest
import torch

from omnivis import __version__
from omnivis.bundle import BUNDLE_FORMAT, BundleHeader, load_bundle, save_bundle
from omnivis.errors import BundleError
from omnivis.models.backbones import create_backbone
from omnivis.models.heads import ImageClassifier


def _state():
    return {"layer.weight": torch.randn(3, 4), "layer.bias": torch.zeros(3)}


def test_roundtrip(tmp_path):
    state = _state()
    save_bundle(tmp_path / "b", state, {"task": "classify", "classes": ["a", "b"]}, metrics={"accuracy": 0.5})
    bundle = load_bundle(tmp_path / "b", task="classify")
    assert bundle.config["classes"] == ["a", "b"]
    assert "omnivis_version" in bundle.config
    assert bundle.metrics == {"accuracy": 0.5}
    assert all(torch.equal(state[k], bundle.state_dict[k]) for k in state)
    assert "classify" in (tmp_path / "b" / "README.md").read_text()
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_truncated_weights_are_a_clear_error(tmp_path):
    save_bundle(tmp_path, _state(), {"task": "classify"})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(BundleError, match="model.safetensors: truncated or not a safetensors file"):
        load_bundle(tmp_path)


def test_pickle_posing_as_weights_is_refused(tmp_path):
    save_bundle(tmp_path, _state(), {"task": "classify"})
    torch.save(_state(), tmp_path / "model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_bundle(tmp_path)


def test_pickle_file_instead_of_bundle_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save(_state(), path)
    with pytest.raises(BundleError, match="refusing to unpickle"):
        load_bundle(path)


def test_wrong_task_and_missing_config(tmp_path):
    save_bundle(tmp_path / "b", _state(), {"task": "detect"})
    with pytest.raises(BundleError, match="is a 'detect' bundle"):
        load_bundle(tmp_path / "b", task="classify")
    (tmp_path / "b" / "config.json").write_text(json.dumps({"classes": []}))
    with pytest.raises(BundleError, match="not an omnivis bundle config"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")


def _header(**changes) -> BundleHeader:
    fields = dict(
        task="detect", backbone="omnivis_resnet_tiny", in_chans=3, img_size=64, mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25], classes=["circle", "square"], data="builtin:shapes",
        split={"kind": "fraction", "val_fraction": 0.2, "seed": 0}, init_from="runs/pre",
        task_fields={"arch": "fcos", "category_ids": [1, 2], "train_config": {"lr": 0.001, "trainer": {"seed": 0}}},
    )
    return BundleHeader(**{**fields, **changes})


def test_header_roundtrip_on_a_flat_config(tmp_path):
    header = _header()
    save_bundle(tmp_path / "b", _state(), header)
    bundle = load_bundle(tmp_path / "b", task="detect")
    assert bundle.header == header
    assert (bundle.header.omnivis_version, bundle.header.format) == (__version__, BUNDLE_FORMAT)
    assert bundle.header.backbone_prefix == "backbone.model."  # recorded, from the task's entry
    on_disk = json.loads((tmp_path / "b" / "config.json").read_text())
    assert on_disk == bundle.config  # one flat object: the task's own keys sit next to the header's
    assert on_disk["arch"] == "fcos" and on_disk["train_config"]["lr"] == 0.001 and "task_fields" not in on_disk
    assert BundleHeader.from_dict(on_disk) == header  # a dict (what tasks pass today) reads the same
    save_bundle(tmp_path / "c", _state(), on_disk)
    assert load_bundle(tmp_path / "c").header == header


def test_unknown_keys_survive_in_task_fields(tmp_path):
    config = {"task": "classify", "backbone": "omnivis_resnet_tiny", "distilled_from": "teacher/",
              "net": {"widths": [8, 16]}, "init_from": None}
    save_bundle(tmp_path / "b", _state(), config)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.header.task_fields == {"distilled_from": "teacher/", "net": {"widths": [8, 16]}}
    assert bundle.config["net"] == {"widths": [8, 16]} and bundle.header.init_from is None
    assert "init_from" not in bundle.config  # unset header fields are left out, so .get(key, default) still works


def test_header_fields_are_validated(tmp_path):
    with pytest.raises(ValueError, match="needs a 'task'"):
        save_bundle(tmp_path / "a", _state(), {"backbone": "omnivis_resnet_tiny"})
    with pytest.raises(ValueError, match="'in_chans' must be an integer"):
        save_bundle(tmp_path / "a", _state(), {"task": "classify", "in_chans": "3"})
    with pytest.raises(ValueError, match="may not hold header fields \\(classes\\)"):
        BundleHeader(task="classify", task_fields={"classes": []})
    save_bundle(tmp_path / "b", _state(), {"task": "classify"})
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    (tmp_path / "b" / "config.json").write_text(json.dumps({**config, "mean": "imagenet"}))
    with pytest.raises(BundleError, match="config.json: bundle header field 'mean' must be a list"):
        load_bundle(tmp_path / "b")


def _write_config(directory, config: dict) -> None:
    save_bundle(directory, _state(), {"task": config["task"]})
    (directory / "config.json").write_text(json.dumps(config))


def test_a_bundle_from_an_older_version_loads(tmp_path):
    # written before the header: no format, no backbone_prefix, a generator's method under 'backbone'
    _write_config(tmp_path / "gen", {"task": "generate", "omnivis_version": "0.0.9", "method": "ddpm",
                                     "backbone": "ddpm", "img_size": 16, "net": {"width": 8}, "init_from": None})
    header = load_bundle(tmp_path / "gen", task="generate").header
    assert (header.format, header.omnivis_version, header.method) == (1, "0.0.9", "ddpm")
    assert header.backbone is None and header.backbone_prefix is None  # a generator holds no backbone
    assert header.task_fields == {"net": {"width": 8}} and header.classes is None
    _write_config(tmp_path / "clf", {"task": "classify", "omnivis_version": "0.0.9", "backbone": "resnet18"})
    assert load_bundle(tmp_path / "clf").header.backbone_prefix == "backbone.model."


@pytest.mark.parametrize("change,message", [
    ({"omnivis_version": "99.0.0"}, f"written by omnivis 99.0.0, newer than this omnivis {__version__}"),
    ({"format": BUNDLE_FORMAT + 1}, f"bundle format {BUNDLE_FORMAT + 1} \\(written by omnivis {__version__}\\) "
                                    f"is unknown to omnivis {__version__}"),
    ({"format": 0}, "bundle format 0"),
    ({"omnivis_version": "next"}, "omnivis_version 'next' is not a version number"),
])
def test_a_newer_bundle_is_refused_naming_both_versions(tmp_path, change, message):
    save_bundle(tmp_path, _state(), {"task": "classify"})
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(tmp_path)
    assert "\n" not in str(err.value)


def test_same_release_with_a_suffix_is_not_newer(tmp_path):
    save_bundle(tmp_path, _state(), {"task": "classify"})
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "omnivis_version": __version__ + ".dev3"}))
    assert load_bundle(tmp_path).header.omnivis_version == __version__ + ".dev3"


def _same_weights(a, b) -> bool:
    return all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())


def test_classify_and_pretrain_bundles_init_a_backbone(tmp_path):
    from omnivis.tasks.pretrain.simclr import SimCLR

    torch.manual_seed(0)
    source = create_backbone("omnivis_resnet_tiny", in_chans=1)
    common = {"backbone": "omnivis_resnet_tiny", "in_chans": 1, "img_size": 32, "mean": [0.5], "std": [0.5]}
    # the keys each task writes today (no backbone_prefix: the header derives it from the task)
    save_bundle(tmp_path / "clf", ImageClassifier(source, 2).state_dict(), {"task": "classify", "classes": ["a", "b"],
                                                                             **common})
    method = SimCLR(source, temperature=0.5, hidden_dim=16, out_dim=8)
    assert any(k.startswith("projection_head.") for k in method.bundle_state_dict())
    save_bundle(tmp_path / "pre", method.bundle_state_dict(), {"task": "pretrain", "method": "simclr", **common})
    for bundle in ("clf", "pre", "pre/model.safetensors"):  # the weights file alone is read through its folder
        loaded = create_backbone("omnivis_resnet_tiny", in_chans=1, pretrained=tmp_path / bundle)
        assert _same_weights(source, loaded), bundle
    with pytest.raises(BundleError, match="weights are for backbone 'omnivis_resnet_tiny' but the model is 'resnet18'"):
        create_backbone("resnet18", in_chans=1, pretrained=tmp_path / "pre")


def test_a_bundle_without_a_backbone_cannot_init_one(tmp_path):
    save_bundle(tmp_path / "gen", _state(), {"task": "generate", "method": "ddpm", "backbone": "ddpm"})
    assert "backbone" not in json.loads((tmp_path / "gen" / "config.json").read_text())  # method under its own name
    with pytest.raises(BundleError, match="this 'generate' bundle holds no backbone"):
        create_backbone("omnivis_resnet_tiny", pretrained=tmp_path / "gen")
    save_bundle(tmp_path / "odd", _state(), {"task": "classify", "backbone": "omnivis_resnet_tiny"})
    with pytest.raises(BundleError, match="holds no backbone weights \\(no 'backbone.model.\\*' keys\\)"):
        create_backbone("omnivis_resnet_tiny", pretrained=tmp_path / "odd")
