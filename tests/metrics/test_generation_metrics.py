"""FID/KID in a classifier's and in Inception-v3's feature space: a set against itself ~0, against noise large."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from omnivis.data.builtin import load_digits_data
from omnivis.errors import ConfigError
from omnivis.metrics.generation import ClassifierFeatures, InceptionFeatures, fid_kid
from omnivis.models.backbones import create_backbone
from omnivis.models.heads import ImageClassifier


def _features() -> ClassifierFeatures:
    torch.manual_seed(0)
    model = ImageClassifier(create_backbone("omnivis_resnet_micro", in_chans=1, img_size=16), 10)
    return ClassifierFeatures(model, 16, 1, [0.5], [0.5])


def _digits(n: int) -> torch.Tensor:
    data = load_digits_data(n)
    x = torch.stack([torch.from_numpy(s.source).float() / 255.0 for s in data.samples]).unsqueeze(1)
    return torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear")


def test_fid_of_a_set_with_itself_is_zero_and_with_noise_large():
    feature = _features()
    real = _digits(400)
    a, b = real[:200], real[200:]
    same = fid_kid(a, a.clone(), feature)
    other_half = fid_kid(a, b, feature)  # two samples of the same distribution: small, not zero
    noise = fid_kid(a, torch.rand_like(a), feature)
    assert abs(same["fid"]) < 1e-6 and abs(same["kid_mean"]) < 1e-4  # KID: unbiased, over random subsets
    assert noise["fid"] > 10 * other_half["fid"] > 0
    assert noise["kid_mean"] > 10 * abs(other_half["kid_mean"])


def test_features_adapt_channels_and_size():
    feature = _features()
    rgb = torch.rand(3, 3, 32, 32)
    assert feature(rgb).shape == (3, feature.num_features)
    assert feature.logits(rgb).shape == (3, 10)


@pytest.mark.slow
def test_inception_fid_from_a_safetensors_file(inception_weights):
    feature = InceptionFeatures(inception_weights)
    real = _digits(24)[:, :, :8, :8]  # the net resizes everything to 299 px; small inputs keep it cheap
    a, b = real[:12], real[12:]
    assert feature(a[:2]).shape == (2, 2048)
    same = fid_kid(a, a.clone(), feature)
    noise = fid_kid(a, torch.rand_like(a), feature)
    assert abs(same["fid"]) < 1e-3
    assert noise["fid"] > 2 * fid_kid(a, b, feature)["fid"] > 0


def test_inception_weights_must_be_safetensors_of_that_net(tmp_path):
    pickle = tmp_path / "pt_inception.pth"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(ConfigError, match=r"pt_inception\.pth: Inception weights must be a \.safetensors file"):
        InceptionFeatures(pickle)
    other = tmp_path / "resnet.safetensors"
    safetensors.torch.save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ConfigError, match=r"resnet\.safetensors: not Inception-v3 FID weights"):
        InceptionFeatures(other)
    with pytest.raises(ConfigError, match="not found"):
        InceptionFeatures(tmp_path / "missing.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(ConfigError, match=r"cut\.safetensors: not a readable safetensors file"):
        InceptionFeatures(tmp_path / "cut.safetensors")
