"""Saliency maps: known answers from models built to look at one region, batch == single, layouts, errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from omnivis.errors import ConfigError
from omnivis.inference.explain import (
    ClassScore,
    Explainer,
    peak,
    randomized_copy,
    resolve_target_layer,
    spearman,
    top_mass_share,
)
from omnivis.inference.explain_run import explain_images
from omnivis.inference.explain_tasks import ClassifierAdapter, FloatModel, image_point
from omnivis.models.backbones import Backbone, create_backbone
from omnivis.models.heads import ImageClassifier

SIZE = 32
REGION = (20, 28, 4, 12)  # x0, x1, y0, y1 in model-input pixels: a window in the top right


class RegionNet(nn.Module):
    """A 'timm model' whose only feature map is non-zero inside REGION: positive 1x1 conv features of
    the image, multiplied by a fixed window mask at stride 4; ``nhwc`` returns it channels-last (as Swin)."""

    def __init__(self, nhwc: bool = False) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        self.conv = nn.Conv2d(3, 4, 1)
        self.masked = nn.Identity()
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(4, 3, 1, 1) + 0.1)
            self.conv.bias.fill_(0.1)
        mask = torch.zeros(1, 1, SIZE // 4, SIZE // 4)
        x0, x1, y0, y1 = REGION
        mask[..., y0 // 4:y1 // 4, x0 // 4:x1 // 4] = 1.0
        self.register_buffer("mask", mask)
        self.nhwc = nhwc
        self.num_features = 4
        self.feature_info = [{"module": "masked", "num_chs": 4, "reduction": 4}]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(self.pool(x))) * self.mask
        return self.masked(features.permute(0, 2, 3, 1) if self.nhwc else features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=(1, 2)) if self.nhwc else x.mean(dim=(2, 3))


def region_classifier(nhwc: bool = False) -> ImageClassifier:
    model = ImageClassifier(Backbone("regionnet", RegionNet(nhwc), 3), 2)
    with torch.no_grad():
        model.head[1].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model.head[1].bias.zero_()
    return model.eval()


def fake_predictor(model: nn.Module, classes=("looks", "other")) -> SimpleNamespace:
    """What ``ClassifierAdapter`` reads of a ``ClassifyPredictor``: a crop-geometry classifier at SIZE px."""
    from omnivis.data.decode import decode_tensor
    from omnivis.data.transforms import build_eval_geometry

    geometry = build_eval_geometry(SIZE)
    return SimpleNamespace(config={"mean": [0.5] * 3, "std": [0.25] * 3}, model=model, classes=list(classes),
                           img_size=SIZE, mode="RGB", task="classify",
                           prepare=lambda images: torch.stack([geometry(decode_tensor(im, "RGB")).as_subclass(torch.Tensor)
                                                               for im in images]))


def textured(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(60, 200, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("nhwc", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam", "layercam"])
def test_a_model_built_to_look_at_a_region_peaks_there(method, nhwc):
    """The map peaks inside the window the features come from, in the input image's own pixels,
    through the short-side resize and center crop of a 48 x 32 image."""
    adapter = ClassifierAdapter(fake_predictor(region_classifier(nhwc)))
    images = [textured(48, 32, seed) for seed in range(3)]
    report = explain_images(adapter, images, method=method, target="looks")
    # 48 x 32 -> resized 48 x 32 (short side 32), cropped x 8..40: input x maps to image x + 8
    x0, x1, y0, y1 = REGION
    for result in report["results"]:
        (row,) = result["explanations"]
        x, y = row["peak"]
        assert x0 + 8 <= x < x1 + 8 and y0 <= y < y1, (method, row)
        assert row["target"] == "looks"
    assert report["layer"] == "masked"


def test_layout_is_read_off_the_layer_output():
    nchw = resolve_target_layer(Backbone("r", RegionNet(False), 3), SIZE)
    nhwc = resolve_target_layer(Backbone("r", RegionNet(True), 3), SIZE)
    assert (nchw.layout, nhwc.layout, nhwc.grid) == ("nchw", "nhwc", (SIZE // 4, SIZE // 4))
    vit = resolve_target_layer(create_backbone("omnivis_vit_tiny", img_size=SIZE), SIZE)
    assert (vit.name, vit.layout, vit.grid, vit.prefix_tokens) == ("blocks.3.norm1", "tokens", (8, 8), 1)
    cnn = resolve_target_layer(create_backbone("omnivis_resnet_tiny"), 64)
    assert cnn.name == "layer2"  # 64 px: the deepest level at least 7 cells wide is stride 8
    assert resolve_target_layer(create_backbone("omnivis_resnet_tiny"), 224).name == "layer4"


def _swin() -> Backbone:
    model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, img_size=SIZE, window_size=4,
                              embed_dim=16, depths=(1, 1), num_heads=(1, 2))
    return Backbone("swin", model, 3)


@pytest.mark.parametrize("make", [
    lambda: create_backbone("omnivis_resnet_tiny"),
    lambda: create_backbone("omnivis_convnext_tiny"),
    lambda: create_backbone("omnivis_vit_tiny", img_size=SIZE),
    _swin,
], ids=["resnet", "convnext", "vit", "swin"])
@pytest.mark.parametrize("method", ["gradcam", "rollout"])
def test_a_batch_gives_the_maps_of_one_image_at_a_time(make, method):
    torch.manual_seed(0)
    backbone = make()
    if method == "rollout" and not hasattr(backbone.model, "blocks"):
        pytest.skip("rollout is for ViTs")
    model = FloatModel(ImageClassifier(backbone, 3), [0.5] * 3, [0.25] * 3).eval()
    explainer = Explainer(model, model.model.backbone, SIZE, method)
    images = torch.stack([torch.from_numpy(np.array(textured(SIZE, SIZE, s))).permute(2, 0, 1) for s in range(3)])
    targets = [ClassScore(i) for i in (0, 2, 1)]
    together = explainer.maps(images, targets)
    alone = np.concatenate([explainer.maps(images[i:i + 1], targets[i:i + 1]) for i in range(3)])
    assert together.shape == (3, SIZE, SIZE)
    assert together.min() >= 0 and together.max() <= 1
    np.testing.assert_allclose(together, alone, atol=2e-3)


def test_rollout_on_a_cnn_and_unknown_names_are_clear_errors():
    model = FloatModel(ImageClassifier(create_backbone("omnivis_resnet_tiny"), 3), [0.5] * 3, [0.25] * 3)
    with pytest.raises(ConfigError, match="rollout applies to ViT backbones.*gradcam"):
        Explainer(model, model.model.backbone, SIZE, "rollout")
    with pytest.raises(ConfigError, match="no layer 'layer9'.*layer1, layer2, layer3, layer4.*Did you mean"):
        Explainer(model, model.model.backbone, SIZE, "gradcam", layer="layer9")
    with pytest.raises(ConfigError, match="unknown explanation method 'gradcm'.*Did you mean gradcam"):
        Explainer(model, model.model.backbone, SIZE, "gradcm")
    adapter = ClassifierAdapter(fake_predictor(region_classifier()))
    with pytest.raises(ConfigError, match="--target 'cat' is not a class.*looks, other"):
        explain_images(adapter, [textured(SIZE, SIZE, 0)], target="cat")


def test_randomized_copy_reinitializes_the_top_and_keeps_the_rest():
    torch.manual_seed(0)
    model = FloatModel(ImageClassifier(create_backbone("omnivis_resnet_tiny"), 3), [0.5] * 3, [0.25] * 3).eval()
    copy = randomized_copy(model, "layer3")
    before, after = model.state_dict(), copy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.head.") for k in changed)
    assert any(".layer3." in k for k in changed) and any(".layer4." in k for k in changed)
    kept = ("model.backbone.model.layer1.", "model.backbone.model.layer2.", "model.backbone.model.conv1.")
    assert not any(k.startswith(kept) for k in changed)


def test_map_numbers_on_known_answers():
    flat = np.ones((10, 10), np.float32)
    spot = np.zeros((10, 10), np.float32)
    spot[3, 7] = 1.0
    assert top_mass_share(flat) == pytest.approx(0.1)
    assert top_mass_share(spot) == pytest.approx(1.0)
    assert peak(spot) == (7, 3)
    assert spearman(spot, spot) == pytest.approx(1.0)
    assert spearman(flat, spot) is None  # a constant map has no ranking
    # 100 x 50 -> resized 64 x 32, crop x 16..48: the input's centre is the image's centre
    assert image_point(15.5, 15.5, (100, 50), 32, "crop") == pytest.approx((49.5, 24.5))
    assert image_point(0, 0, (64, 32), 32, "squash") == pytest.approx((0.5, 0.0))


def test_no_hooks_are_left_on_the_model():
    """grad-cam hooks the explained layer; a model used afterwards (a server's, predict --explain's) must
    run without them."""
    adapter = ClassifierAdapter(fake_predictor(region_classifier()))
    explain_images(adapter, [textured(SIZE, SIZE, 0)], sanity=True)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in adapter.model.modules())


def test_conv_cells_are_placed_where_their_receptive_field_is():
    """A ResNet's stride-2, padding-1 convs centre cell i on pixel 2i (stem, maxpool, layer2: cell i of
    the stride-8 map on pixel 8i, centre 8i + 0.5), not at 8i + 4 where a plain resize puts it; a
    ConvNeXt's patchify stem (4x4, stride 4) has no offset, and a ViT's tokens none either."""
    from omnivis.inference.explain_grid import aligned_upsample, grid_origin

    resnet = create_backbone("omnivis_resnet_tiny")
    assert grid_origin(resnet, "layer2", 3, 64) == pytest.approx((0.5, 0.5, 8.0, 8.0), abs=1e-6)
    assert resolve_target_layer(resnet, 64, "layer2").origin == pytest.approx((0.5, 0.5, 8.0, 8.0), abs=1e-6)
    assert resolve_target_layer(create_backbone("omnivis_convnext_tiny"), 64, "stages.0").origin is None
    assert resolve_target_layer(create_backbone("omnivis_vit_tiny", img_size=SIZE), SIZE).origin is None
    # a single hot cell is drawn around its centre: cell (1, 2) of a stride-8 grid at 8i + 0.5
    cells = torch.zeros(1, 4, 4)
    cells[0, 1, 2] = 1.0
    drawn = aligned_upsample(cells, (0.5, 0.5, 8.0, 8.0), 32)[0].numpy()
    assert peak(drawn) == (16, 8)
