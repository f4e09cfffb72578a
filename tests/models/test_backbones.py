from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from omnivis.errors import BundleError, ConfigError
from omnivis.models.backbones import create_backbone, list_backbones

NAMES = [
    ("omnivis_resnet_micro", {}),
    ("omnivis_resnet_tiny", {}),
    ("omnivis_convnext_tiny", {}),
    ("omnivis_vit_tiny", {"img_size": 32}),
    ("resnet18", {}),
    ("convnext_atto", {}),
    ("vit_tiny_patch16_224", {"img_size": 32}),
    ("efficientnet_b0", {}),
]


@pytest.mark.parametrize("name,kwargs", NAMES)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_feature_contract(name, kwargs, in_chans):
    backbone = create_backbone(name, in_chans=in_chans, **kwargs).eval()
    x = torch.randn(2, in_chans, 32, 32)
    with torch.no_grad():
        pooled = backbone.forward_pooled(x)
        maps = backbone.forward_multiscale(x)
    assert pooled.shape == (2, backbone.num_features)
    assert len(maps) == len(backbone.feature_info)
    for fmap, info in zip(maps, backbone.feature_info):
        assert fmap.shape[1] == info["num_chs"]
        assert fmap.shape[-1] == max(1, 32 // info["reduction"]) or info["reduction"] > 32


@pytest.mark.parametrize("name,kwargs", NAMES)
def test_multiscale_upto_gives_the_same_first_levels(name, kwargs):
    """``upto`` stops early (later stages are not run) and changes nothing it returns."""
    backbone = create_backbone(name, in_chans=3, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = backbone.forward_multiscale(x)
        for upto in range(len(full)):
            part = backbone.forward_multiscale(x, upto=upto)
            assert len(part) == upto + 1 and all(torch.equal(a, b) for a, b in zip(part, full))


def test_unknown_backbone_suggests_close_match():
    with pytest.raises(ConfigError, match="resnet18"):
        create_backbone("resnet81")


def test_presets_are_listed_first():
    names = list_backbones("omnivis_*")
    assert names[:5] == [
        "omnivis_resnet_micro", "omnivis_resnet_tiny", "omnivis_resnet_small", "omnivis_convnext_tiny", "omnivis_vit_tiny"
    ]
    assert "resnet18" in list_backbones("resnet1*")


def test_pretrained_safetensors_roundtrip(tmp_path):
    source = create_backbone("omnivis_resnet_tiny", in_chans=1)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    loaded = create_backbone("omnivis_resnet_tiny", in_chans=1, pretrained=path)
    for key, value in source.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])


def test_pretrained_wrong_channels_names_the_backbone(tmp_path):
    source = create_backbone("omnivis_resnet_tiny", in_chans=3)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    with pytest.raises(BundleError, match="omnivis_resnet_tiny.*1 input channels.*shape mismatch"):
        create_backbone("omnivis_resnet_tiny", in_chans=1, pretrained=path)


def test_pretrained_other_architecture_is_a_clear_error(tmp_path):
    source = create_backbone("omnivis_convnext_tiny")
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    with pytest.raises(BundleError, match="do not fit backbone 'omnivis_resnet_tiny'"):
        create_backbone("omnivis_resnet_tiny", pretrained=path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin"])
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(BundleError, match="refusing to unpickle"):
        create_backbone("omnivis_resnet_tiny", pretrained=path)


def test_timm_folder_format(tmp_path):
    import json

    source = create_backbone("omnivis_resnet_tiny")
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "omnivis_resnet_tiny"}))
    loaded = create_backbone("omnivis_resnet_tiny", pretrained=tmp_path)
    key = next(iter(source.model.state_dict()))
    assert torch.equal(loaded.model.state_dict()[key], source.model.state_dict()[key])
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(BundleError, match="'resnet18' but the model is 'omnivis_resnet_tiny'"):
        create_backbone("omnivis_resnet_tiny", pretrained=tmp_path)
