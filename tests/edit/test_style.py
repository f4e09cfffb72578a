"""Style transfer (AdaIN): the statistics it moves, tiles that agree, the bundle end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnivis.errors import ConfigError
from omnivis.inference.edit import EditPredictor
from omnivis.inference.edit_style import feature_stats, score_style
from omnivis.models.backbones import create_backbone
from omnivis.models.style import StyleTransferNet, adain, channel_stats
from omnivis.tasks.edit import train_edit

from .conftest import tiny_edit_config


def test_adain_gives_the_content_the_styles_channel_statistics():
    torch.manual_seed(0)
    content, style = torch.randn(2, 8, 10, 12) * 3 + 1, torch.randn(2, 8, 7, 9) * 0.5 - 2
    moved = adain(content, channel_stats(content), channel_stats(style))
    mean, std = channel_stats(moved)
    style_mean, style_std = channel_stats(style)
    assert torch.allclose(mean, style_mean, atol=1e-5) and torch.allclose(std, style_std, atol=1e-4)


def test_whole_image_statistics_gathered_over_tiles():
    torch.manual_seed(0)
    net = StyleTransferNet(create_backbone("omnivis_resnet_micro"), level=2, width=8).eval()
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    with torch.inference_mode():
        features = net.features(image.float()[None] / 255)[-1]
    mean, std = feature_stats(net, image, tile=0)
    assert torch.allclose(mean, channel_stats(features)[0], atol=1e-5)
    assert torch.allclose(std, channel_stats(features)[1], atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(feature_stats(net, image, tile=128), (mean, std)))  # one tile


@pytest.fixture(scope="module")
def style_bundle(tmp_path_factory, photo_folder):
    config = tiny_edit_config(photo_folder, op="style", model="omnivis_resnet_micro", crop_size=32)
    return train_edit(config, tmp_path_factory.mktemp("style") / "style")


def test_a_style_bundle_restyles_a_photo_after_a_style_image(style_bundle, photo_folder):
    predictor = EditPredictor.from_dir(style_bundle)
    content, style = photo_folder / "astronaut.png", photo_folder / "coffee.png"
    out = predictor.edit(content, style=style)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(predictor.edit(content, style=style, tile=32), predictor.edit(content, style=style, tile=32))
    assert not np.array_equal(predictor.edit(content, style=style, strength=0.0), out)
    with pytest.raises(ConfigError, match="needs a style image"):
        predictor.edit(content)
    scored = score_style(predictor, [content, style], ["astronaut", "coffee"], progress=False)["summary"]
    assert scored["input_content_ssim_y"] == pytest.approx(1.0)
    assert {"ours_gram_referee", "histogram_match_gram_referee", "ours_content_ssim_y"} <= set(scored)


def test_style_tiles_agree_with_one_pass(style_bundle):
    """Statistics gathered over tiles with context, tiles on the encoder's grid: as one pass."""
    from skimage import data

    from omnivis.inference.edit_style import stylize
    from omnivis.metrics.edit import psnr

    predictor = EditPredictor.from_dir(style_bundle)
    content = torch.from_numpy(np.asarray(data.astronaut())[:200, :232].copy()).permute(2, 0, 1)
    style = torch.from_numpy(np.asarray(data.coffee())[:120, :160].copy()).permute(2, 0, 1)
    net, context = predictor.model, predictor.context
    whole_stats = feature_stats(net, content, tile=0)
    tiled_stats = feature_stats(net, content, tile=64, context=context)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(whole_stats, tiled_stats))
    whole = stylize(net, content, style, tile=0, context=context)
    tiled = stylize(net, content, style, tile=64, context=context)
    assert psnr(tiled.permute(1, 2, 0).numpy(), whole.permute(1, 2, 0).numpy()) >= 50


def test_other_ops_refuse_a_style_image(edit_bundles, photo_folder):
    with pytest.raises(ConfigError, match="takes no style image"):
        EditPredictor.from_dir(edit_bundles["denoise"]).edit(photo_folder / "astronaut.png", style=photo_folder / "coffee.png")


def test_the_server_restyles_with_a_style_file(style_bundle, photo_folder):
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from omnivis.serve.app import create_app
    from omnivis.serve.runner import load_models

    content, style = (photo_folder / "astronaut.png").read_bytes(), (photo_folder / "coffee.png").read_bytes()
    with TestClient(create_app(load_models([f"style={style_bundle}"]))) as client:
        answer = client.post("/api/edit/style", files={"image": ("a.png", content, "image/png"),
                                                       "style": ("s.png", style, "image/png")})
        assert answer.status_code == 200, answer.text
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.json()["png_base64"]))))
        expected = EditPredictor.from_dir(style_bundle).edit(photo_folder / "astronaut.png", style=photo_folder / "coffee.png")
        assert np.array_equal(got, expected)
        openai = client.post("/v1/images/edits", files={"image": ("a.png", content, "image/png")}, data={"prompt": "x"})
        assert openai.status_code == 400 and "/api/edit/style" in openai.json()["error"]["message"]
