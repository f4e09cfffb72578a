"""(i) Cold start of ``omnivis predict BUNDLE one.png`` against ``python -c "import torch, timm"``.

Whole-process wall time, runs interleaved (reference, predict, reference, ...) so that a machine whose
speed drifts affects both alike; medians and their ratio are printed. ``--src DIR`` runs another
checkout's ``src`` (e.g. a ``git worktree`` of an older commit) for a before/after comparison.

    python benchmarks/cold_start.py [--runs 5] [--src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def make_bundle(folder: Path) -> tuple[Path, Path]:
    """A tiny digits classifier (a few steps: weights do not matter here) and one PNG to predict."""
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, train_classifier

    config = ClassifyConfig(img_size=16, channels=1, val_fraction=0.0,
                            trainer=TrainerConfig(epochs=1, max_steps=2, progress=False))
    bundle = train_classifier(config, folder / "bundle")
    image = folder / "one.png"
    Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)).save(image)
    return bundle, image


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", type=Path, default=None, help="Run omnivis from this src folder instead.")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        bundle, image = make_bundle(Path(tmp))
        reference = [sys.executable, "-c", "import torch, timm"]
        predict = [sys.executable, "-m", "omnivis.cli", "predict", str(bundle), str(image), "--json"]
        timed(reference, env), timed(predict, env)  # warm the file cache for both
        ref_times, predict_times = [], []
        for _ in range(args.runs):
            ref_times.append(timed(reference, env))
            predict_times.append(timed(predict, env))
    result = {
        "runs": args.runs,
        "src": str(args.src) if args.src else "installed",
        "import_torch_timm_s": round(statistics.median(ref_times), 3),
        "omnivis_predict_s": round(statistics.median(predict_times), 3),
    }
    result["ratio"] = round(result["omnivis_predict_s"] / result["import_torch_timm_s"], 3)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
