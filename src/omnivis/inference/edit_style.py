"""Style transfer with an edit bundle (``op: style``): AdaIN applied tile by tile, and its scoring
against histogram matching by content SSIM and style (Gram) distance.

AdaIN normalizes the content's encoder features with their channel means and stds and gives them
the style's. A tile must use the statistics of the *whole* content image (else each tile would be
restyled on its own and the tiles would disagree), at the scale the tiles are decoded at: so the
statistics are gathered in a first pass over the image, tile by tile (bounded memory), then every
tile is decoded with them in the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from omnivis.data.decode import decode_tensor
from omnivis.inference.tiling import tiled_apply
from omnivis.models.style import EPS, StyleTransferNet

REFEREE_SEED = 20240601
"""Seeds the second encoder the Gram distance is also measured with: one the decoder never trained
against, so a low distance is not only the decoder fitting its own encoder."""


def _pad_to(images: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    pad = (0, (-w) % stride, 0, (-h) % stride)
    if not any(pad):
        return images
    mode = "reflect" if min(h, w) > max(pad) else "replicate"
    return F.pad(images, pad, mode=mode)


@torch.inference_mode()
def feature_stats(net: StyleTransferNet, image: torch.Tensor, tile: int = 512,
                  device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) uint8 image -> the channel mean and std (each (1, C, 1, 1)) of its encoder features at
    AdaIN's level, accumulated over tiles of ``tile`` px (the whole image at once when it fits)."""
    h, w = image.shape[-2:]
    step = tile if tile else max(h, w)
    total, squares, count = 0.0, 0.0, 0
    for top in range(0, h, step):
        for left in range(0, w, step):
            part = image[:, top : top + step, left : left + step].float().div(255.0)[None].to(device)
            features = net.features(_pad_to(part, net.stride))[-1].double()
            total = total + features.sum(dim=(0, 2, 3))
            squares = squares + (features * features).sum(dim=(0, 2, 3))
            count += features.shape[2] * features.shape[3]
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0)
    return mean.float().view(1, -1, 1, 1), (var + EPS).sqrt().float().view(1, -1, 1, 1)


def stylize(net: StyleTransferNet, content: torch.Tensor, style: torch.Tensor, strength: float = 1.0,
            tile: int = 512, context: int = 64, progress: bool = False, device: str = "cpu") -> torch.Tensor:
    """(3, H, W) uint8 content restyled after a (3, h, w) uint8 style image -> (3, H, W) uint8.

    ``strength`` is AdaIN's alpha: 0 decodes the content's own features, 1 the style's statistics.
    """
    content_stats = feature_stats(net, content, tile, device)
    style_stats = feature_stats(net, style, tile, device)

    def run(tiles: torch.Tensor) -> torch.Tensor:
        h, w = tiles.shape[-2:]
        return net(_pad_to(tiles, net.stride), content_stats, style_stats, alpha=strength)[..., :h, :w]

    return tiled_apply(run, content, tile=tile, context=context, blend=min(16, max(1, tile // 4)) if tile else 16,
                       progress=progress, device=device)


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
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
    h, w = tensor.shape[-2:]
    if max(h, w) > side:
        factor = side / max(h, w)
        tensor = F.interpolate(tensor, size=(max(8, round(h * factor)), max(8, round(w * factor))), mode="bilinear",
                               antialias=True, align_corners=False)
    return encoder.forward_multiscale(tensor, upto=level)


def score_style(predictor, photos: Sequence, names: Sequence[str], progress: bool = True,
                pictures: Path | None = None, shown: int = 6) -> dict:
    """Restyle each test photo after the next one (the last after the first), by the bundle and by
    histogram matching; score content SSIM (Y, against the content photo) and the style Gram distance
    (to the style photo) in the bundle's own encoder and in a referee encoder it never trained with."""
    from omnivis.inference.edit_baselines import histogram_match
    from omnivis.metrics.edit import PROTOCOL, gram_distance, ssim
    from omnivis.metrics.edit_report import comparison_picture

    net, level = predictor.model, predictor.model.level
    referee = referee_encoder(predictor.config["encoder"])
    own = net.encoder
    images = [decode_tensor(p, "RGB") for p in photos]
    rows, shown_pictures = [], []
    items = list(enumerate(names))
    for index, name in track(items, description="scoring style", transient=True, disable=not progress):
        content, style = images[index], images[(index + 1) % len(images)]
        ours = stylize(net, content, style, tile=predictor.tile, context=predictor.context).permute(1, 2, 0).numpy()
        content_hwc, style_hwc = content.permute(1, 2, 0).numpy(), style.permute(1, 2, 0).numpy()
        outputs = {"ours": ours, "histogram_match": histogram_match(content_hwc, style_hwc), "input": content_hwc}
        row: dict = {"image": name, "style": names[(index + 1) % len(names)]}
        for method, output in outputs.items():
            row[f"{method}_content_ssim_y"] = ssim(output, content_hwc, channel="y")
            for encoder_name, encoder in (("own", own), ("referee", referee)):
                row[f"{method}_gram_{encoder_name}"] = gram_distance(gram_features(encoder, output, level),
                                                                     gram_features(encoder, style_hwc, level))
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

