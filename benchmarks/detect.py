"""Detection benchmark: train the default detector on builtin:shapes, report mAP, training time, latency.

Train scenes come from seed 0, test scenes from seed 1 (no scene is shared). The reference is the
issue's target: mAP50 >= 0.95 within 10 minutes of CPU training on 2 cores.

    python benchmarks/detect.py            # the default recipe (``DetectConfig`` defaults)
    python benchmarks/detect.py --quick    # a tiny run that checks the script end to end
    python benchmarks/detect.py --arch fasterrcnn --epochs 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET_MAP50 = 0.95
TARGET_SECONDS = 600.0


def latency_ms(bundle: Path, img_size: int, repeats: int = 30) -> float:
    """Median CPU milliseconds to detect one image (batch 1, preprocessing included)."""
    from omnivis.data.detection import shapes_detection_data
    from omnivis.inference.detect import DetectPredictor

    predictor = DetectPredictor.from_dir(bundle)
    images = [r.source for r in shapes_detection_data(8, img_size, seed=1).records]
    for im in images[:3]:
        predictor.detect([im])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        predictor.detect([images[i % len(images)]])
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def run(quick: bool = False, arch: str | None = None, epochs: int | None = None, num_train: int | None = None,
        lr: float | None = None, batch_size: int | None = None, model: str | None = None, threads: int = 2,
        out: str | None = None) -> dict:
    """Train and evaluate; returns the figures (mAP50, mAP, seconds, ms per image) and the settings."""
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.inference.detect import evaluate_detector
    from omnivis.tasks.detect import DetectConfig, train_detector

    torch.set_num_threads(threads)
    defaults = DetectConfig()
    overrides = {k: v for k, v in dict(arch=arch, num_train=num_train, lr=lr, batch_size=batch_size, model=model).items()
                 if v is not None}
    if quick:
        overrides.update(num_train=overrides.get("num_train", 32), num_test=16)
    n_epochs = epochs if epochs is not None else (1 if quick else defaults.trainer.epochs)  # None: sized by the data
    config = DetectConfig(**overrides, trainer=TrainerConfig(epochs=n_epochs, progress=False, seed=0))
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="omnivis-bench-detect-")) / "run"
    start = time.perf_counter()
    train_detector(config, folder)
    train_s = time.perf_counter() - start
    metrics = evaluate_detector(folder, out_dir=None, progress=False)  # test scenes, seed 1
    header = json.loads((folder / "config.json").read_text())
    ms = latency_ms(folder, header["img_size"], repeats=5 if quick else 30)
    return {
        "arch": config.arch, "model": config.model, "img_size": header["img_size"],
        "epochs": header["train_config"]["trainer"]["epochs"], "steps": json.loads((folder / "metrics.json").read_text())["train_steps"],
        "num_train": config.num_train, "num_test": config.num_test, "batch_size": config.batch_size, "lr": config.lr,
        "map50": metrics["map50"], "map": metrics["map"], "train_seconds": train_s, "latency_ms": ms,
        "bundle": str(folder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch")
    parser.add_argument("--model")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    r = run(args.quick, args.arch, args.epochs, args.num_train, args.lr, args.batch_size, args.model, args.threads, args.out)
    print(f"detect benchmark: {r['arch']} on {r['model']}, {r['img_size']} px, {r['num_train']} train scenes (seed 0), "
          f"{r['num_test']} test scenes (seed 1), {r['epochs']} epochs ({r['steps']} steps), batch {r['batch_size']}, lr {r['lr']}")
    print("| metric | value | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| mAP50 | {r['map50']:.4f} | {TARGET_MAP50} | {r['map50'] / TARGET_MAP50:.3f} |")
    print(f"| mAP@[.5:.95] | {r['map']:.4f} | - | - |")
    print(f"| training seconds | {r['train_seconds']:.1f} | {TARGET_SECONDS:.0f} | {r['train_seconds'] / TARGET_SECONDS:.3f} |")
    print(f"| CPU latency ms/image (batch 1, {args.threads} threads) | {r['latency_ms']:.2f} | - | - |")
    print(f"bundle: {r['bundle']}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
