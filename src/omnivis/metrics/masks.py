"""Pictures and files of predicted masks, shared by every task that predicts masks (segment, multitask).

A class mask becomes a coloured overlay and a palette PNG that reads back as a mask, a one-line
summary of its classes, and COCO stuff-segmentation results that another tool can re-score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from omnivis.data.detection_records import mask_to_rle
from omnivis.data.images import load_images

PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]], dtype=np.uint8
)


def palette_for(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours: class 0 black, then a fixed list, then seeded random colours."""
    extra = np.random.default_rng(0).integers(0, 256, size=(max(0, num_classes - len(PALETTE)), 3), dtype=np.uint8)
    return np.concatenate([PALETTE, extra])[:num_classes]


def mask_summary(mask: np.ndarray, classes: Sequence[str], top_k: int = 5) -> tuple[str, dict[str, float]]:
    """(H, W) class mask -> ("circle 12%, square 5%", {class: fraction of pixels}); class 0 is background
    and left out of the summary."""
    counts = np.bincount(mask.reshape(-1), minlength=len(classes))
    fractions = {c: round(float(n) / mask.size, 6) for c, n in zip(classes, counts)}
    shown = sorted(((f, c) for c, f in list(fractions.items())[1:] if f > 0), reverse=True)[:top_k]
    return ", ".join(f"{c} {f:.0%}" for f, c in shown) or f"{classes[0]} only", fractions


def write_mask_pictures(paths: Sequence[str | Path], masks: Sequence[np.ndarray], num_classes: int,
                        out_dir: str | Path) -> list[Path]:
    """Per image: ``NAME_overlay.png`` (classes coloured over the image, background left clear) and
    ``NAME_mask.png`` (a palette PNG of class indices, readable as a mask again); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = palette_for(num_classes)
    full_palette = np.concatenate([colours, np.zeros((256 - len(colours), 3), np.uint8)]).reshape(-1).tolist()
    written: list[Path] = []
    used: set[str] = set()
    for i, (path, mask) in enumerate(zip(paths, masks)):
        base = Path(path).stem if isinstance(path, (str, Path)) else f"image{i}"
        base = base if base not in used else f"{base}_{i}"
        used.add(base)
        image = np.asarray(load_images([path], "RGB")[0]).astype(np.float32)
        alpha = np.where(mask[..., None] > 0, 0.55, 0.0)
        overlay = (image * (1 - alpha) + colours[mask].astype(np.float32) * alpha).round().astype(np.uint8)
        Image.fromarray(overlay).save(out_dir / f"{base}_overlay.png")
        index = Image.fromarray(mask, mode="P")
        index.putpalette(full_palette)
        index.save(out_dir / f"{base}_mask.png")
        written += [out_dir / f"{base}_overlay.png", out_dir / f"{base}_mask.png"]
    return written


def mask_results(image_id: int, mask: np.ndarray, num_classes: int) -> list[dict]:
    """An (H, W) class mask as COCO stuff-segmentation results: one RLE per class present, with
    ``category_id`` = the class index (background included), so pycocotools or any COCO tool re-scores it."""
    return [{"image_id": image_id, "category_id": int(c), "segmentation": mask_to_rle(mask == c)}
            for c in np.unique(mask) if int(c) < num_classes]
