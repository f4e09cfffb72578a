"""Does sharing one backbone hurt detection? Three-head multitask vs detection alone on builtin:shapes.

Three runs on the same scenes (train seed 0, test seed 1), epochs and image size:
- ``multitask``: ``omnivis train multitask --tasks classify,segment,detect`` (accuracy, mIoU, mAP);
- ``multitask_detect_only``: the same recipe with ``--tasks detect`` (isolates the effect of sharing:
  same augmentation, batch size, learning rate and steps, only the other two heads are gone);
- ``detect``: ``omnivis train detect`` with its own default recipe (the single-task reference).

    python benchmarks/multitask.py            # 3 epochs, 64 px, 600 scenes (the docs' command)
    python benchmarks/multitask.py --quick    # 1 epoch, 32 px, 64 scenes: checks the script runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _multitask(tasks: str, epochs: int, img_size: int, train_images: int, test_images: int, model: str) -> dict:
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.inference.multitask import evaluate_multitask
    from omnivis.tasks.multitask import MultitaskConfig, train_multitask

    config = MultitaskConfig(
        tasks=tasks, train_images=train_images, val_images=test_images, img_size=img_size, model=model,
        trainer=TrainerConfig(epochs=epochs, seed=0, progress=False, accelerator="cpu"),
    )
    out = Path(tempfile.mkdtemp(prefix="omnivis-bench-mt-")) / "run"
    start = time.perf_counter()
    train_multitask(config, out)
    seconds = time.perf_counter() - start
    metrics = evaluate_multitask(out, progress=False)
    keys = ("accuracy", "miou", "map", "map50")
    return {**{k: metrics[k] for k in keys if k in metrics}, "train_seconds": seconds, "bundle": str(out)}


def _detect(epochs: int, img_size: int, train_images: int, test_images: int, model: str) -> dict:
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.inference.detect import evaluate_detector
    from omnivis.tasks.detect import DetectConfig, train_detector

    config = DetectConfig(
        num_train=train_images, num_test=test_images, img_size=img_size, model=model,
        trainer=TrainerConfig(epochs=epochs, seed=0, progress=False, accelerator="cpu"),
    )
    out = Path(tempfile.mkdtemp(prefix="omnivis-bench-det-")) / "run"
    start = time.perf_counter()
    train_detector(config, out)
    seconds = time.perf_counter() - start
    metrics = evaluate_detector(out, progress=False)
    return {"map": metrics["map"], "map50": metrics["map50"], "train_seconds": seconds, "bundle": str(out)}


def run(epochs: int = 3, img_size: int = 64, train_images: int = 600, test_images: int = 200,
        model: str = "omnivis_resnet_tiny", threads: int = 2) -> dict:
    """Train the three runs one after another; returns their metrics and ratios against ``detect``."""
    torch.set_num_threads(threads)
    args = (epochs, img_size, train_images, test_images, model)
    shared = _multitask("classify,segment,detect", *args)
    alone = _multitask("detect", *args)
    detect = _detect(*args)
    return {
        "recipe": f"{model}, {img_size} px, {train_images} train / {test_images} test scenes, {epochs} epochs, "
                  f"{threads} threads",
        "multitask": shared,
        "multitask_detect_only": alone,
        "detect": detect,
        "map50_multitask_vs_detect": shared["map50"] / max(detect["map50"], 1e-9),
        "map50_multitask_vs_detect_only": shared["map50"] / max(alone["map50"], 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 32 px, 64 scenes: checks the script runs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="omnivis_resnet_tiny")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        result = run(epochs=1, img_size=32, train_images=64, test_images=32, model=args.model, threads=args.threads)
    else:
        result = run(epochs=args.epochs, model=args.model, threads=args.threads)
    print(result["recipe"])
    print(f"{'run':<24}{'accuracy':>10}{'mIoU':>8}{'mAP':>8}{'mAP50':>8}{'seconds':>9}")
    for name in ("multitask", "multitask_detect_only", "detect"):
        r = result[name]
        cells = [f"{r[k]:.3f}" if k in r else "-" for k in ("accuracy", "miou", "map", "map50")]
        print(f"{name:<24}{cells[0]:>10}{cells[1]:>8}{cells[2]:>8}{cells[3]:>8}{r['train_seconds']:>9.0f}")
    print(f"mAP50 ratio multitask / detect: {result['map50_multitask_vs_detect']:.3f}; "
          f"multitask / detect-only multitask: {result['map50_multitask_vs_detect_only']:.3f}")


if __name__ == "__main__":
    main()
