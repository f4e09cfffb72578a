"""Saliency maps for any omnivis model, through the ``grad-cam`` package, with no user code per backbone.

pytorch-grad-cam needs the layer to explain and, for transformers, a hand-written ``reshape_transform``
(and still draws wrong maps for Swin, whose stages return NHWC maps). Here both come from the backbone
contract: the layer is a ``feature_info`` level of the timm model, and the reshape is read off the
shape that layer actually returns on a probe image (NCHW, NHWC or tokens with prefix tokens), so every
timm CNN, ViT and Swin works the same way. Attention rollout (Abnar & Zuidema 2020) covers ViTs
without gradients.

A map is computed for a *job*: one image and one target (a class, a class's pixels, a box); jobs of a
batch run in one forward and one backward, and since nothing in an eval-mode model mixes images, a
batch gives the same maps as one image at a time (tests check it).
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnivis.errors import ConfigError
from omnivis.inference.explain_grid import aligned_upsample, grid_origin
from omnivis.inference.explain_methods import METHODS
from omnivis.models.backbones import Backbone

MIN_CELLS = 7  # the default layer is the deepest one whose map is at least this wide (7 at ImageNet's 224 px)


def _cam_class(method: str) -> type:
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "eigencam": EigenCAM,
            "scorecam": ScoreCAM, "layercam": LayerCAM}[method]


def check_method(method: str) -> str:
    if method not in METHODS:
        close = difflib.get_close_matches(method, list(METHODS), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown explanation method '{method}'; choose one of {', '.join(METHODS)}.{hint}")
    return method


# ----------------------------------------------------------------------------------------------
# The layer to explain, from the backbone contract
# ----------------------------------------------------------------------------------------------


@dataclass
class TargetLayer:
    """The module whose activations are explained and how to read them as (N, C, h, w) maps.

    Attributes:
        name: the module's name inside the timm model (``layer4``, ``blocks.3.norm1``, ``layers.3``).
        layout: ``nchw``, ``nhwc`` (Swin stages) or ``tokens`` (ViT blocks: (N, prefix + h*w, C)).
        grid: the (h, w) of the map at the bundle's input size.
        prefix_tokens: class/register tokens in front of the patch tokens (``tokens`` only).
        origin: where the cells sit on the input when not where a plain resize puts them (``nchw``
            maps of strided, padded convs): cell (0, 0)'s centre and the pitch, ``explain_grid.grid_origin``.
    """

    name: str
    module: nn.Module
    layout: str
    grid: tuple[int, int]
    prefix_tokens: int = 0
    origin: tuple[float, float, float, float] | None = None

    def reshape(self, output: torch.Tensor) -> torch.Tensor:
        """The layer's output as (N, C, h, w): pytorch-grad-cam's ``reshape_transform``."""
        if isinstance(output, (tuple, list)):
            output = output[0]
        if self.layout == "nhwc":
            return output.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            patches = output[:, self.prefix_tokens:, :]
            return patches.reshape(output.shape[0], *self.grid, output.shape[-1]).permute(0, 3, 1, 2)
        return output


def feature_layers(backbone: Backbone) -> list[tuple[str, int]]:
    """(module name, stride) of each multi-scale level the backbone declares (timm's ``feature_info``)."""
    info = getattr(backbone.model, "feature_info", None) or []
    return [(str(f["module"]), int(f["reduction"])) for f in info if f.get("module")]


def resolve_target_layer(backbone: Backbone, img_size: int, name: str | None = None) -> TargetLayer:
    """The layer to explain: ``name`` (a module of the timm model), or by default the deepest
    ``feature_info`` level whose map is at least 7 cells wide at ``img_size`` (the last stage at 224 px;
    an earlier one on small images, where the last stage is 2x2 and cannot point at anything).

    For a transformer block the map is read at the block's first norm (the input of its attention),
    because with a class token the last block's patch outputs never reach the classifier and their
    gradient is zero.
    """
    modules = dict(backbone.model.named_modules())
    levels = feature_layers(backbone)
    if name is None:
        if not levels:
            raise ConfigError(f"backbone '{backbone.name}' declares no feature levels; pass --layer NAME")
        wide = [n for n, stride in levels if math.ceil(img_size / stride) >= MIN_CELLS]
        name = wide[-1] if wide else levels[0][0]
        if hasattr(modules[name], "norm1") and hasattr(modules[name], "attn"):
            name = f"{name}.norm1"
    elif name not in modules or not name:
        choices = [n for n, _ in levels]
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"no layer '{name}' in backbone '{backbone.name}'; its feature levels are "
                          f"{', '.join(choices) or '(none)'} (any module name of the timm model works).{hint}")
    module = modules[name]
    return _probe_layout(backbone, module, name, img_size)


def _probe_layout(backbone: Backbone, module: nn.Module, name: str, img_size: int) -> TargetLayer:
    """Run one blank image and look at what ``module`` returns: the layout cannot be told from the
    model's class (timm's Swin returns NHWC, its ConvNeXt NCHW, a ViT block tokens)."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    modes = {sub: sub.training for sub in backbone.modules()}  # restored one by one: a detector
    try:                                                                 # shares the timm model, not the wrapper
        backbone.eval()
        with torch.no_grad():
            backbone.forward_features(torch.zeros(1, backbone.in_chans, img_size, img_size,
                                                  device=next(backbone.parameters()).device))
    finally:
        handle.remove()
        for sub, training in modes.items():
            sub.training = training
    if not seen or not isinstance(seen[0], torch.Tensor):
        raise ConfigError(f"layer '{name}' of backbone '{backbone.name}' does not run on an image's way to the "
                          "features, or returns no tensor; pick another --layer")
    shape = tuple(seen[0].shape)
    channels = _channels_of(backbone, name, module, shape) if len(shape) == 4 else 0
    if len(shape) == 4:
        if shape[-1] == channels and shape[1] != channels:
            return TargetLayer(name, module, "nhwc", (shape[1], shape[2]))
        origin = grid_origin(backbone, name, backbone.in_chans, img_size)
        offset = max(abs(origin[0] - origin[2] / 2), abs(origin[1] - origin[3] / 2))
        return TargetLayer(name, module, "nchw", (shape[2], shape[3]), origin=origin if offset > 1e-3 else None)
    if len(shape) == 3:
        grid = getattr(getattr(backbone.model, "patch_embed", None), "grid_size", None)
        prefix = int(getattr(backbone.model, "num_prefix_tokens", 0) or 0)
        if grid is None:
            side = math.isqrt(shape[1] - prefix)
            grid = (side, side)
        grid = (int(grid[0]), int(grid[1]))
        if grid[0] * grid[1] + prefix != shape[1]:
            raise ConfigError(f"layer '{name}' returns {shape[1]} tokens, which is not a {grid[0]}x{grid[1]} grid "
                              f"plus {prefix} prefix tokens; pick another --layer")
        return TargetLayer(name, module, "tokens", grid, prefix)
    raise ConfigError(f"layer '{name}' returns a tensor of shape {shape}, not a feature map; pick another --layer")


def _channels_of(backbone: Backbone, name: str, module: nn.Module, shape: tuple[int, ...]) -> int:
    """The channel count of a 4-D output: the feature level's ``num_chs``, else what the module's last
    norm or conv says, else the smaller of dims 1 and 3."""
    for info in getattr(backbone.model, "feature_info", None) or []:
        if info.get("module") == name:
            return int(info["num_chs"])
    for sub in reversed(list(module.modules())):
        for attr in ("num_features", "out_channels", "normalized_shape"):
            value = getattr(sub, attr, None)
            if isinstance(value, int):
                return value
            if isinstance(value, (tuple, list)) and value:
                return int(value[-1])
    return min(shape[1], shape[3])


# ----------------------------------------------------------------------------------------------
# Maps
# ----------------------------------------------------------------------------------------------


class ClassScore(nn.Module):
    """Grad-CAM target: one class's logit in a classifier's (K,) output."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.index]


class ClassPixels:
    """Grad-CAM target: one class's logits summed over the pixels of a (K, H, W) output assigned to it."""

    def __init__(self, index: int, mask: torch.Tensor) -> None:
        self.index = index
        self.mask = mask.float()

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output[self.index] * self.mask.to(output.device)).sum()


class Explainer:
    """Saliency maps of ``model`` (float images in [0, 255], (N, C, S, S) -> a tensor with the batch first)
    for one explanation method at one layer of ``backbone``.

    ``maps(images, targets)`` returns (N, S, S) float32 maps, each scaled to [0, 1] (pytorch-grad-cam's
    per-image min-max), one per (image, target) job.
    """

    def __init__(self, model: nn.Module, backbone: Backbone, img_size: int, method: str = "gradcam",
                 layer: str | None = None) -> None:
        self.method = check_method(method)
        self.model = model.eval()
        self.backbone = backbone
        self.img_size = img_size
        if method == "rollout":
            self.attention = attention_modules(backbone)
            self.layer = None
        else:
            self.layer = resolve_target_layer(backbone, img_size, layer)
        self._cam = None

    @property
    def layer_name(self) -> str:
        return self.layer.name if self.layer is not None else f"blocks (attention of {len(self.attention)})"

    def maps(self, images: torch.Tensor, targets: Sequence[Callable] | None) -> np.ndarray:
        """uint8 or float (N, C, S, S) images and one target per image -> (N, S, S) maps in [0, 1]."""
        images = images.float().to(next(self.model.parameters()).device)
        if self.method == "rollout":
            return rollout(self.backbone, self.attention, images, self.model)
        if self._cam is None:
            self._cam = _cam_class(self.method)(model=self.model, target_layers=[self.layer.module],
                                                reshape_transform=self.layer.reshape)
            self._cam.batch_size = 64  # Score-CAM's masked copies per forward (its default is 16)
            if self.layer.origin is not None:  # cell maps come back as they are, placed by aligned_upsample
                grid_h, grid_w = self.layer.grid
                self._cam.get_target_width_height = lambda _input: (grid_w, grid_h)
        with torch.enable_grad():
            try:
                cam = self._cam(input_tensor=images, targets=list(targets) if targets is not None else None)
            except IndexError:
                if self._cam.activations_and_grads.activations:
                    raise
                raise ConfigError(f"layer '{self.layer.name}' does not run when this model predicts (it reads only "
                                  "earlier stages); pick an earlier --layer") from None
        if self.layer.origin is not None:
            placed = aligned_upsample(torch.from_numpy(np.asarray(cam, dtype=np.float32)), self.layer.origin,
                                      images.shape[-1])
            return _min_max(placed.numpy())
        return np.asarray(cam, dtype=np.float32)


    def close(self) -> None:
        """Remove grad-cam's hooks from the model (it leaves them until it is garbage-collected)."""
        if self._cam is not None:
            self._cam.activations_and_grads.release()
            self._cam = None


def attention_modules(backbone: Backbone) -> list[nn.Module]:
    """The ViT attention modules whose weights rollout multiplies; an error for a backbone without them."""
    blocks = getattr(backbone.model, "blocks", None)
    found = [b.attn for b in (blocks or []) if hasattr(getattr(b, "attn", None), "attn_drop")]
    if not found or not hasattr(backbone.model, "patch_embed"):
        raise ConfigError(f"rollout applies to ViT backbones (global attention blocks); '{backbone.name}' has none. "
                          f"Use one of {', '.join(m for m in METHODS if m != 'rollout')}")
    return found


def rollout(backbone: Backbone, attention: list[nn.Module], images: torch.Tensor, model: nn.Module,
            discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout: mean-over-heads attention plus identity, row-normalized, multiplied from the
    first block to the last; the map is the class token's row (the mean row without one) over the patches.

    The attention weights are caught at ``attn_drop`` with timm's fused kernel switched off for the call.
    """
    caught: list[torch.Tensor] = []
    hooks, fused = [], []
    for module in attention:
        fused.append(getattr(module, "fused_attn", False))
        module.fused_attn = False
        hooks.append(module.attn_drop.register_forward_hook(lambda _m, inp, _o: caught.append(inp[0].detach())))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
        for module, value in zip(attention, fused):
            module.fused_attn = value
    tokens = caught[0].shape[-1]
    result = torch.eye(tokens, device=images.device).expand(images.shape[0], tokens, tokens)
    for attn in caught:
        fused_heads = attn.mean(dim=1)
        if discard_ratio:
            flat = fused_heads.flatten(1)
            drop = flat.topk(int(flat.shape[1] * discard_ratio), dim=1, largest=False).indices
            flat.scatter_(1, drop, 0)
        step = fused_heads + torch.eye(tokens, device=images.device)
        step = step / step.sum(dim=-1, keepdim=True)
        result = step @ result
    prefix = int(getattr(backbone.model, "num_prefix_tokens", 0) or 0)
    grid = tuple(int(g) for g in backbone.model.patch_embed.grid_size)
    rows = result[:, 0, prefix:] if prefix else result[:, :, :].mean(dim=1)
    maps = rows.reshape(-1, 1, *grid)
    maps = F.interpolate(maps, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return _min_max(maps.cpu().numpy())


def _min_max(maps: np.ndarray) -> np.ndarray:
    low = maps.reshape(len(maps), -1).min(axis=1)[:, None, None]
    high = maps.reshape(len(maps), -1).max(axis=1)[:, None, None]
    return ((maps - low) / np.maximum(high - low, 1e-7)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# What a map says, in numbers
# ----------------------------------------------------------------------------------------------


def peak(cam: np.ndarray) -> tuple[int, int]:
    """(x, y) of the map's maximum, in the map's pixels (the first one on ties)."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(x), int(y)


def top_mass_share(cam: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the map's total mass in its top ``fraction`` of pixels: 0.1 for a flat map, 1.0 when
    everything sits in a tenth of the image."""
    flat = np.sort(cam.ravel())[::-1]
    total = float(flat.sum())
    if total <= 0:
        return 0.0
    return float(flat[: max(1, int(round(len(flat) * fraction)))].sum() / total)


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation of two maps; None when one is constant (no ranking to compare)."""
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


# ----------------------------------------------------------------------------------------------
# The model-randomization sanity check (Adebayo et al. 2018)
# ----------------------------------------------------------------------------------------------


def find_backbone(model: nn.Module) -> Backbone:
    """The omnivis ``Backbone`` inside a task's model: a submodule, or held by one (a detector's
    ``FPNBackbone`` keeps it out of its own state dict, as ``.backbone``)."""
    for module in model.modules():
        if isinstance(module, Backbone):
            return module
        held = getattr(type(module), "backbone", None)
        if isinstance(held, property) and isinstance(module.backbone, Backbone):
            return module.backbone
    raise ConfigError(f"{type(model).__name__} has no omnivis backbone to explain")


def randomized_copy(model: nn.Module, layer: str | None, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with its top re-initialized: every module outside the backbone (heads,
    decoders) and the backbone's feature levels from the explained one up (cascading randomization
    down to the explained layer). A map that survives this does not depend on what the model learned.

    Args:
        layer: the explained layer's name in the timm model (None: rollout, every block is re-initialized).
    """
    clone = copy.deepcopy(model)
    backbone = find_backbone(clone)
    inside = {id(m) for m in backbone.modules()}
    levels = [name for name, _ in feature_layers(backbone)]
    level_of_layer = next((i for i, name in enumerate(levels) if layer and (layer == name or layer.startswith(name + "."))),
                          0)
    top = [backbone.model.get_submodule(name) for name in levels[level_of_layer:]]
    top += [m for name, m in backbone.model.named_children() if name in ("norm", "fc_norm", "head", "head_drop")]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in clone.modules():
            if id(module) not in inside and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for block in top:
            for module in block.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)
    return clone.eval()
