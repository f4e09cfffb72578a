"""Style transfer with an edit bundle (``op: style``): AdaIN applied tile by tile, and its scoring
against histogram matching by content SSIM and style (Gram) distance.

AdaIN normalizes the content's encoder features with their channel means and stds and gives them
the style's. A tile must use the statistics of the *whole* content image (else each tile would be
restyled on its own and the tiles would disagree), at the scale the tiles are decoded at: so the
statistics are gathered in a first pass over the image, tile by tile (bounded memory), then every
tile is decoded with them in the second. Tiles start on multiples of the encoder's stride, the whole
image's sampling grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from omnivis.data.decode import decode_tensor
from omnivis.inference.tiling import pad_to_multiple, plan_axis, tiled_apply
from omnivis.models.style import EPS, StyleTransferNet

REFEREE_SEED = 20240601
"""Seeds the second encoder the Gram distance is also measured with: one the decoder never trained
against, so a low distance is not only the decoder fitting its own encoder."""


@torch.inference_mode()
def feature_stats(net: StyleTransferNet, image: torch.Tensor, tile: int = 512, context: int = 64,
                  device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) uint8 image -> the channel mean and std (each (1, C, 1, 1)) of its encoder features at
    AdaIN's level, gathered tile by tile (bounded memory): each tile is encoded with ``context`` pixels
    around it, on the whole image's sampling grid, and only its own core's features are counted, so the
    result is the whole-image one when ``context`` covers the encoder's reach."""
    stride = net.stride
    padded = pad_to_multiple(image, stride)
    rows, cols = (plan_axis(n, tile, context, 0, align=stride) for n in padded.shape[-2:])
    total, squares, count = 0.0, 0.0, 0
    for r in range(rows.cores):
        for c in range(cols.cores):
            y0, x0 = rows.window_start(r), cols.window_start(c)
            window = padded[:, y0 : y0 + rows.window, x0 : x0 + cols.window].float().div(255.0)[None].to(device)
            features = net.features(window)[-1].double()
            (top, bottom), (left, right) = rows.bounds[r : r + 2], cols.bounds[c : c + 2]
            core = features[..., (top - y0) // stride : (bottom - y0) // stride,
                            (left - x0) // stride : (right - x0) // stride]
            total = total + core.sum(dim=(0, 2, 3))
            squares = squares + (core * core).sum(dim=(0, 2, 3))
            count += core.shape[2] * core.shape[3]
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0)
    return mean.float().view(1, -1, 1, 1).cpu(), (var + EPS).sqrt().float().view(1, -1, 1, 1).cpu()


def stylize(net: StyleTransferNet, content: torch.Tensor, style: torch.Tensor, strength: float = 1.0,
            tile: int = 512, context: int = 64, progress: bool = False, device: str = "cpu") -> torch.Tensor:
    """(3, H, W) uint8 content restyled after a (3, h, w) uint8 style image -> (3, H, W) uint8.

    ``strength`` is AdaIN's alpha: 0 decodes the content's own features, 1 the style's statistics.
    """
    content_stats = [t.to(device) for t in feature_stats(net, content, tile, context, device)]
    style_stats = [t.to(device) for t in feature_stats(net, style, tile, context, device)]

    def run(tiles: torch.Tensor) -> torch.Tensor:
        return net(tiles, content_stats, style_stats, alpha=strength)

    out = tiled_apply(run, content, tile=tile, context=context, blend=min(16, tile // 4) if tile else 16,
                      align=net.stride, progress=progress, device=device)
    return out.contiguous()


def referee_encoder(name: str):
    """The same backbone as the bundle's encoder, with other random weights (:data:`REFEREE_SEED`)."""
    from omnivis.models.backbones import create_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(REFEREE_SEED)
        return create_backbone(name).eval()


@torch.inference_mode()
def gram_features(encoder, image: np.ndarray, level: int, side: int = 256) -> list[torch.Tensor]:
    """(H, W, 3) uint8 -> the encoder's levels 0..level on a copy of at most ``side`` px (Gram matrices
    are averages over positions: a smaller copy keeps them and the cost bounded)."""
    device = next(encoder.parameters()).device
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None].to(device) / 255.0
    h, w = tensor.shape[-2:]
    if max(h, w) > side:
        factor = side / max(h, w)
        tensor = F.interpolate(tensor, size=(max(8, round(h * factor)), max(8, round(w * factor))), mode="bilinear",
                               antialias=True, align_corners=False)
    return [f.cpu() for f in encoder.forward_multiscale(tensor, upto=level)]


def score_style(predictor, photos: Sequence, names: Sequence[str], progress: bool = True,
                pictures: Path | None = None, shown: int = 6) -> dict:
    """Restyle each test photo after the next one (the last after the first), by the bundle and by
    histogram matching; score content SSIM (Y, against the content photo) and the style Gram distance
    (to the style photo) in the bundle's own encoder and in a referee encoder it never trained with."""
    from omnivis.inference.edit_baselines import histogram_match
    from omnivis.metrics.edit import PROTOCOL, gram_distance, ssim
    from omnivis.metrics.edit_report import comparison_picture

    net, level = predictor.model, predictor.model.level
    referee = referee_encoder(predictor.config["encoder"]).to(predictor.device)
    own = net.encoder
    images = [decode_tensor(p, "RGB") for p in photos]
    rows, shown_pictures = [], []
    items = list(enumerate(names))
    for index, name in track(items, description="scoring style", transient=True, disable=not progress):
        content, style = images[index], images[(index + 1) % len(images)]
        ours = stylize(net, content, style, tile=predictor.tile, context=predictor.context,
                       device=predictor.device).permute(1, 2, 0).numpy()
        content_hwc, style_hwc = content.permute(1, 2, 0).numpy(), style.permute(1, 2, 0).numpy()
        outputs = {"ours": ours, "histogram_match": histogram_match(content_hwc, style_hwc), "input": content_hwc}
        row: dict = {"image": name, "style": names[(index + 1) % len(names)]}
        encoders = {"own": own, "referee": referee}
        style_features = {name: gram_features(encoder, style_hwc, level) for name, encoder in encoders.items()}
        for method, output in outputs.items():
            row[f"{method}_content_ssim_y"] = ssim(output, content_hwc, channel="y")
            for name, encoder in encoders.items():
                row[f"{method}_gram_{name}"] = gram_distance(gram_features(encoder, output, level), style_features[name])
        rows.append(row)
        if pictures is not None and len(shown_pictures) < shown:
            shown_pictures.append(comparison_picture(content_hwc, {k: v for k, v in outputs.items() if k != "input"},
                                                     _fit(style_hwc, content_hwc.shape[:2]), name, pictures,
                                                     target_label="style"))
    keys = [k for k in rows[0] if k not in ("image", "style")] if rows else []
    means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    summary = {**means, "images": len(rows), "protocol": PROTOCOL + "; style: Gram distance of the encoder's "
               "levels 0..2 (own encoder, and a referee encoder of other random weights), content: SSIM on Y",
               "degradation": "each test photo restyled after the next one", "best_baseline": "histogram_match"}
    if rows:
        summary["gram_referee_ratio_to_baseline"] = means["ours_gram_referee"] / max(1e-12, means["histogram_match_gram_referee"])
    return {"summary": summary, "rows": rows, "pictures": shown_pictures}


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The style photo resized to the content's size, for the comparison picture's last column."""
    from PIL import Image

    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))

