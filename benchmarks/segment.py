"""Semantic segmentation on builtin:shapes: mIoU, Dice, pixel accuracy and training time.

Train scenes come from seed 0, test scenes from seed 1 (new pictures, not a held-out copy). The
references: the target (mIoU >= 0.85 within 10 minutes of CPU training on 2 cores) and the
all-background baseline (what a model that learned nothing scores).

    python benchmarks/segment.py            # train segment's defaults (the steps sized by the data)
    python benchmarks/segment.py --quick    # a 1-epoch smoke run at 32 px
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

TARGET_MIOU = 0.85
TARGET_SECONDS = 600.0


def background_baseline(n: int, img_size: int, seed: int) -> dict:
    """Metrics of predicting background everywhere on the test scenes."""
    from omnivis.data.masks import load_shapes_segmentation
    from omnivis.metrics.segmentation import segmentation_metrics

    data = load_shapes_segmentation(n, img_size, seed)
    target = torch.stack([torch.from_numpy(s.mask).long() for s in data.samples])
    values = segmentation_metrics(torch.zeros_like(target), target, len(data.classes))
    return {k: float(values[k]) for k in ("miou", "dice", "pixel_accuracy")}


def run(epochs: int | None = None, img_size: int | None = None, train_images: int = 600, test_images: int = 200,
        arch: str = "fpn", model: str = "omnivis_resnet_tiny", threads: int = 2) -> dict:
    """Train the default recipe, evaluate on the seed-1 test scenes; returns figures and ratios."""
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.inference.segment import evaluate_segmenter
    from omnivis.tasks.segment import SegmentConfig, train_segmenter

    torch.set_num_threads(threads)
    config = SegmentConfig(
        data="builtin:shapes", train_images=train_images, val_images=test_images, train_seed=0, val_seed=1,
        img_size=img_size, arch=arch, model=model,
        trainer=TrainerConfig(epochs=epochs, seed=0, progress=False, accelerator="cpu"),
    )
    out = Path(tempfile.mkdtemp(prefix="omnivis-bench-seg-")) / "run"
    start = time.perf_counter()
    train_segmenter(config, out)
    seconds = time.perf_counter() - start
    metrics = evaluate_segmenter(out, progress=False)  # the seed-1 test scenes
    header = json.loads((out / "config.json").read_text())
    steps = json.loads((out / "metrics.json").read_text())["train_steps"]
    baseline = background_baseline(test_images, header["img_size"], 1)
    return {
        "recipe": f"{arch} on {model}, {header['img_size']} px, {train_images} train scenes, "
                  f"{header['train_config']['trainer']['epochs']} epochs ({steps} steps), {threads} threads",
        "miou": metrics["miou"],
        "dice": metrics["dice"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "per_class_iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
        "train_seconds": seconds,
        "baseline_background": baseline,
        "miou_vs_target": metrics["miou"] / TARGET_MIOU,
        "seconds_vs_budget": seconds / TARGET_SECONDS,
        "meets_target": bool(metrics["miou"] >= TARGET_MIOU and seconds <= TARGET_SECONDS),
        "bundle": str(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 32 px, 64 scenes: checks the script runs")
    parser.add_argument("--epochs", type=int, default=None, help="default: sized by the data, as train segment")
    parser.add_argument("--arch", default="fpn")
    parser.add_argument("--model", default="omnivis_resnet_tiny")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        result = run(epochs=1, img_size=32, train_images=64, test_images=32, arch=args.arch, model=args.model,
                     threads=args.threads)
    else:
        result = run(epochs=args.epochs, arch=args.arch, model=args.model, threads=args.threads)
    base = result["baseline_background"]
    print(f"segmentation on builtin:shapes (train seed 0, test seed 1): {result['recipe']}")
    print(f"{'':22}{'omnivis':>10}{'background':>12}{'target':>10}")
    print(f"{'mIoU':22}{result['miou']:>10.4f}{base['miou']:>12.4f}{TARGET_MIOU:>10.2f}")
    print(f"{'Dice':22}{result['dice']:>10.4f}{base['dice']:>12.4f}{'':>10}")
    print(f"{'pixel accuracy':22}{result['pixel_accuracy']:>10.4f}{base['pixel_accuracy']:>12.4f}{'':>10}")
    print(f"{'training seconds':22}{result['train_seconds']:>10.1f}{'':>12}{TARGET_SECONDS:>10.0f}")
    print(f"mIoU / target = {result['miou_vs_target']:.3f}; time / budget = {result['seconds_vs_budget']:.3f}; "
          f"meets target: {result['meets_target']}")
    print("per-class IoU: " + ", ".join(f"{k} {v:.3f}" for k, v in result["per_class_iou"].items() if v is not None))


if __name__ == "__main__":
    main()
