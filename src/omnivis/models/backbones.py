"""Backbones: any timm model behind one feature contract, plus tiny presets that train on a laptop CPU.

Every task asks a backbone for the same three things: pooled features (``forward_pooled``), the last
feature map (``forward_features``) and multi-scale maps with their channels and strides
(``forward_multiscale`` + ``feature_info``). Heads and necks depend on nothing else, so any backbone
serves any task. The timm model is kept whole under ``.model`` (classifier removed), so its state-dict
keys stay timm's own and timm checkpoints load without key surgery.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import build_model_with_cfg, register_model
from timm.models._registry import generate_default_cfgs
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from omnivis.bundle import DEFAULT_BACKBONE_PREFIX, WEIGHTS, is_bundle, load_bundle
from omnivis.errors import BundleError, ConfigError

# ----------------------------------------------------------------------------------------------
# Tiny presets: small enough to train in seconds on 2 CPU cores at 32-64 px.
# They are registered in timm, so `timm.create_model("omnivis_resnet_tiny")` works too.
# ----------------------------------------------------------------------------------------------


def _preset_cfg(input_size: int, **kwargs: object) -> dict:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, input_size, input_size),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "license": "apache-2.0",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "omnivis_resnet_micro": _preset_cfg(32, first_conv="conv1", classifier="fc"),
        "omnivis_resnet_tiny": _preset_cfg(32, first_conv="conv1", classifier="fc"),
        "omnivis_resnet_small": _preset_cfg(64, first_conv="conv1", classifier="fc"),
        "omnivis_convnext_tiny": _preset_cfg(32, first_conv="stem.0", classifier="head.fc"),
        "omnivis_vit_tiny": _preset_cfg(32, first_conv="patch_embed.proj", classifier="head"),
    }
)


@register_model
def omnivis_resnet_micro(pretrained: bool = False, **kwargs: object) -> ResNet:
    """ResNet with a 3x3 deep stem and one BasicBlock per stage of 16-96 channels (0.23 M parameters):
    a distillation student under a fifth of ``omnivis_resnet_tiny``."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 96), stem_width=16, stem_type="deep")
    return build_model_with_cfg(ResNet, "omnivis_resnet_micro", pretrained, **dict(args, **kwargs))


@register_model
def omnivis_resnet_tiny(pretrained: bool = False, **kwargs: object) -> ResNet:
    """ResNet with a 64-channel stem and one BasicBlock per stage of 32-256 channels (1.2 M parameters)."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32)
    return build_model_with_cfg(ResNet, "omnivis_resnet_tiny", pretrained, **dict(args, **kwargs))


@register_model
def omnivis_resnet_small(pretrained: bool = False, **kwargs: object) -> ResNet:
    """ResNet with a 64-channel stem and two BasicBlocks per stage of 32-256 channels (2.8 M parameters)."""
    args = dict(block=BasicBlock, layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem_width=32)
    return build_model_with_cfg(ResNet, "omnivis_resnet_small", pretrained, **dict(args, **kwargs))


@register_model
def omnivis_convnext_tiny(pretrained: bool = False, **kwargs: object) -> ConvNeXt:
    """ConvNeXt with (1, 1, 2, 1) blocks and 32-256 channels (1.0 M parameters)."""
    args = dict(depths=(1, 1, 2, 1), dims=(32, 64, 128, 256))
    return build_model_with_cfg(ConvNeXt, "omnivis_convnext_tiny", pretrained, **dict(args, **kwargs))


@register_model
def omnivis_vit_tiny(pretrained: bool = False, **kwargs: object) -> VisionTransformer:
    """ViT with 4x4 patches on 32 px, 4 blocks of width 128 (0.5 M parameters); the MAE default."""
    args = dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0)
    return build_model_with_cfg(VisionTransformer, "omnivis_vit_tiny", pretrained, **dict(args, **kwargs))


PRESETS: dict[str, str] = {
    "omnivis_resnet_micro": "0.23 M params, a distillation student (32-64 px)",
    "omnivis_resnet_tiny": "1.2 M params, fastest CPU classifier backbone (32-64 px)",
    "omnivis_resnet_small": "2.8 M params, more capacity at 32-64 px",
    "omnivis_convnext_tiny": "1.0 M params ConvNeXt",
    "omnivis_vit_tiny": "0.5 M params ViT, 4x4 patches (img size is set from the config)",
}


# ----------------------------------------------------------------------------------------------
# The contract
# ----------------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A timm model without its classifier, exposing the omnivis feature contract.

    Attributes:
        name: the timm model name.
        in_chans: number of input channels.
        num_features: width of ``forward_pooled``'s output.
        feature_info: one dict per multi-scale level: ``{"num_chs": C, "reduction": stride}``.
    """

    def __init__(self, name: str, model: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.name = name
        self.in_chans = in_chans
        self.model = model
        self.num_features: int = int(model.num_features)
        self.feature_info: list[dict] = [
            {"num_chs": int(f["num_chs"]), "reduction": int(f["reduction"])} for f in model.feature_info
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> the last feature map: (B, C, h, w) for CNNs, (B, tokens, C) for ViTs."""
        return self.model.forward_features(x)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, num_features): the pooled embedding every head starts from."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward_multiscale(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """(B, C_in, H, W) -> one (B, C_i, H/r_i, W/r_i) map per ``feature_info`` level.

        ``upto``: return levels 0..upto only, and do not run the stages after it (a detector that
        reads strides 4-16 of a small image need not compute the stride-32 stage).
        """
        if upto is None or upto >= len(self.feature_info) - 1:
            return list(self.model.forward_intermediates(x, intermediates_only=True))
        return list(self.model.forward_intermediates(x, indices=list(range(upto + 1)), intermediates_only=True,
                                                     stop_early=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(x)


def create_backbone(
    name: str,
    in_chans: int = 3,
    pretrained: str | Path | None = None,
    img_size: int | None = None,
    drop_path_rate: float = 0.0,
    output_stride: int | None = None,
) -> Backbone:
    """Create any timm model (or an omnivis preset) as a ``Backbone``.

    Args:
        name: a timm model name, e.g. ``resnet18``, ``convnext_atto``, ``omnivis_resnet_tiny``.
        in_chans: 1 for grayscale, 3 for RGB.
        pretrained: a local ``.safetensors`` file (timm keys), a timm Hugging Face-style folder
            (``model.safetensors`` + ``config.json``), or an omnivis bundle folder (its backbone
            weights are used). Nothing is downloaded.
        img_size: input size for models that fix it at construction (ViTs); ignored by CNNs.
        drop_path_rate: stochastic depth, passed to timm.
        output_stride: 8 or 16 to keep the last stages at that stride with dilated convolutions
            (timm's ``output_stride``, same weights); None: the model's own (32 for ResNets).
    """
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " See `omnivis models list`."
        raise ConfigError(f"unknown backbone '{name}'.{hint}")
    kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    try:
        model = timm.create_model(name, **kwargs, **({"img_size": img_size} if img_size else {}))
    except TypeError as err:
        if "output_stride" in str(err):
            raise ConfigError(f"backbone '{name}' takes no output_stride (--output-stride); it applies to CNNs "
                              "whose timm class has one (ResNet and its kin, ...); drop it or pick such a model") from None
        if "img_size" not in str(err):
            raise
        model = timm.create_model(name, **kwargs)  # CNNs take any input size
    backbone = Backbone(name, model, in_chans)
    if pretrained is not None:
        load_backbone_weights(backbone, pretrained)
    return backbone


_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar"}


def read_backbone_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read backbone weights (timm keys) and, when recorded, the architecture they belong to.

    An omnivis bundle (or its ``model.safetensors``) is read through ``omnivis/bundle.py``: its header
    names the backbone and the key prefix its weights sit under. Pickle-based files are refused:
    loading them can run arbitrary code.
    """

    path = Path(path)
    if path.is_file() and path.name == WEIGHTS and is_bundle(path.parent):
        path = path.parent  # a bundle's own weights file: its header says where the backbone is
    if path.is_dir() and is_bundle(path):
        bundle = load_bundle(path)
        return bundle.backbone_state_dict(), bundle.header.backbone
    if not path.exists():
        raise BundleError(f"{path}: pretrained weights not found")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise BundleError(
            f"{path}: refusing to unpickle a '{path.suffix}' file (it can run arbitrary code); "
            "convert it to .safetensors (safetensors.torch.save_file) and pass that"
        )
    architecture = None
    if path.is_dir():  # timm's Hugging Face folder format (or a folder holding only weights)
        config_path = path / "config.json"
        architecture = json.loads(config_path.read_text()).get("architecture") if config_path.exists() else None
        path = path / "model.safetensors"
        if not path.exists():
            raise BundleError(f"{path}: no model.safetensors in this folder")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise BundleError(f"{path}: not a readable safetensors file ({err})") from None
    if state and all(k.startswith((DEFAULT_BACKBONE_PREFIX, "head.")) for k in state):
        prefix = DEFAULT_BACKBONE_PREFIX  # a classifier bundle's model.safetensors copied out of its folder
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise BundleError(f"{path}: this bundle holds no backbone weights")
    return state, architecture


def load_backbone_weights(backbone: Backbone, path: str | Path) -> None:
    """Load weights into ``backbone``, ignoring classifier heads, and fail clearly on a mismatch."""
    state, architecture = read_backbone_state(path)
    if architecture and architecture != backbone.name:
        raise BundleError(
            f"{path}: weights are for backbone '{architecture}' but the model is '{backbone.name}'"
        )
    own = backbone.model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not _is_classifier_key(k)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        detail = []
        if wrong_shape:
            k = wrong_shape[0]
            detail.append(f"{len(wrong_shape)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        if missing:
            detail.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        arch = f"'{architecture}'" if architecture else "another architecture or channel count"
        raise BundleError(
            f"{path}: weights do not fit backbone '{backbone.name}' with {backbone.in_chans} input channels "
            f"(they look like {arch}): " + "; ".join(detail)
        )
    backbone.model.load_state_dict(state)


def _is_classifier_key(key: str) -> bool:
    return key.split(".")[0] in {"fc", "head", "classifier", "last_linear"} or key.startswith("head.fc.")


def list_backbones(pattern: str | None = None) -> list[str]:
    """timm model names matching a shell-style pattern (``*`` wildcards), presets first."""
    names = timm.list_models(pattern or "*")
    presets = [n for n in PRESETS if n in names]
    return presets + [n for n in names if n not in PRESETS]
