"""Where a conv feature map's cells sit on the image, so a coarse map is drawn where the model looked.

pytorch-grad-cam stretches an (h, w) map over the image as if cell j covered pixels [j*s, (j+1)*s)
(``cv2.resize``). A stride-2 conv with padding 1 (ResNet's stem, its downsampling blocks) centres
output cell i on input pixel 2i instead, half a pixel up-left of that, and the offsets add up: at
stride 8 a ResNet's cells sit 3.5 px up-left of where the resize puts them, at stride 32 15.5 px,
which is the size of a small object. Patch embeddings (ViT, Swin, ConvNeXt's stem) have no offset.

The offset is measured, not derived from layer types: on a copy of the backbone whose convs are
uniform positive kernels (max-pools become average pools of the same geometry, so ties cannot pick a
side), the gradient of one cell's activation with respect to the input is the cell's receptive
field, symmetric about its centre; its centroid is the centre.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

PROBE_MIN = 256  # probe size: the centre cell's receptive field must not reach the border


def _uniform_surrogate(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the same geometry and symmetric, positive, input-independent weights."""
    surrogate = copy.deepcopy(model).eval()
    for name, module in list(surrogate.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            parent = surrogate.get_submodule(name.rpartition(".")[0]) if "." in name else surrogate
            setattr(parent, name.rpartition(".")[2], nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                                                                  ceil_mode=module.ceil_mode))
    with torch.no_grad():
        for module in surrogate.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
                module.weight.fill_(1.0)
                module.bias.zero_()
    return surrogate


def grid_origin(backbone: nn.Module, layer: str, in_chans: int, img_size: int) -> tuple[float, float, float, float]:
    """(x, y) of cell (0, 0)'s centre and the (x, y) pitch between cells, in input pixels (pixel j spans
    [j, j + 1)), for the NCHW map the module ``layer`` of ``backbone.model`` returns. Probed at 256 px
    (room for the receptive field), or at ``img_size`` for a model that takes no other size."""
    surrogate = _uniform_surrogate(backbone.model)
    try:
        return _probe(surrogate, layer, in_chans, max(PROBE_MIN, img_size))
    except (RuntimeError, ValueError, AssertionError):
        return _probe(surrogate, layer, in_chans, img_size)


def _probe(surrogate: nn.Module, layer: str, in_chans: int, size: int) -> tuple[float, float, float, float]:
    seen: list[torch.Tensor] = []
    module = surrogate.get_submodule(layer)
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    image = torch.ones(1, in_chans, size, size, requires_grad=True)
    try:
        with torch.enable_grad():
            surrogate.forward_features(image)
            grid = seen[0]
            h, w = grid.shape[-2:]
            grid[0, :, h // 2, w // 2].sum().backward()
    finally:
        handle.remove()
    pitch_x, pitch_y = size / w, size / h
    field = image.grad[0].abs().sum(dim=0).double()
    total = field.sum()
    if not torch.isfinite(total) or total <= 0:  # a norm over a constant input (ConvNeXt's LayerNorm) stops the
        return pitch_x / 2, pitch_y / 2, pitch_x, pitch_y  # probe: then the cells are placed as the resize does
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    cx = float((field.sum(dim=0) * centres).sum() / total)
    cy = float((field.sum(dim=1) * centres).sum() / total)
    return cx - (w // 2) * pitch_x, cy - (h // 2) * pitch_y, pitch_x, pitch_y


def aligned_upsample(maps: torch.Tensor, origin: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """(N, h, w) cell maps -> (N, size, size), each pixel sampled bilinearly at its place on the cell grid
    (cells beyond the edge repeat the border cell)."""
    x0, y0, pitch_x, pitch_y = origin
    n, h, w = maps.shape
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    u = (centres - x0) / pitch_x  # in cells, 0 = cell 0's centre
    v = (centres - y0) / pitch_y
    gx, gy = (2 * u + 1) / w - 1, (2 * v + 1) / h - 1  # grid_sample's align_corners=False coordinates
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None].expand(n, -1, -1, -1)
    return F.grid_sample(maps[:, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
