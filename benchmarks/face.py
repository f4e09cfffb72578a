"""Face verification on people never seen in training: omnivis' ArcFace default vs classical baselines
and vs the same network trained with plain softmax; and batched vs one-at-a-time embedding.

    python benchmarks/face.py            # everything (about 20 minutes on 2 CPU cores)
    python benchmarks/face.py --quick    # a short run that checks the script end to end

The split is the issue's: train on ORL people s1-s30, score every pair of the 100 photos of s31-s40
(450 genuine, 4,500 impostor). The baselines are scored on exactly these pairs in the same run:
raw pixels (cosine, and Euclidean distance, the stronger), eigenfaces (PCA 60, whitened, fit on
s1-s30; cosine) and LBP histograms (uniform LBP 8/1 on a 7 x 7 grid; chi-squared distance).
Results are printed and merged into benchmarks/results.json under ``face``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from results_file import merge_results  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent
FIGURES = ("auc", "eer", "tar_at_far_0.01", "tar_at_far_0.001", "accuracy_10fold")


def _scores(features: np.ndarray, pairs, metric: str) -> np.ndarray:
    a, b = features[pairs.first], features[pairs.second]
    if metric == "cosine":
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    if metric == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    return -((a - b) ** 2 / (a + b + 1e-10)).sum(1)  # chi-squared distance between histograms


def _lbp(image: np.ndarray, grid: int = 7) -> np.ndarray:
    from skimage.feature import local_binary_pattern

    codes = local_binary_pattern(image, 8, 1, "uniform").astype(int)
    h, w = codes.shape
    cells = [codes[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid] for i in range(grid)
             for j in range(grid)]
    return np.concatenate([np.bincount(c.ravel(), minlength=10) / c.size for c in cells])


def baselines(data, train_idx, test_idx, pairs) -> dict:
    from sklearn.decomposition import PCA

    from omnivis.metrics.face import verification_metrics

    photos = [np.asarray(Image.open(s.source).convert("L"), dtype=np.float64) / 255.0 for s in data.samples]
    pixels = np.stack([p.ravel() for p in photos])
    test = pixels[test_idx]
    eigen = PCA(60, whiten=True, random_state=0).fit(pixels[train_idx]).transform(test)
    lbp = np.stack([_lbp(photos[i]) for i in test_idx])
    rows = {
        "raw pixels (cosine)": _scores(test, pairs, "cosine"),
        "raw pixels (euclidean)": _scores(test, pairs, "euclidean"),
        "eigenfaces (PCA 60 whitened, cosine)": _scores(eigen, pairs, "cosine"),
        "LBP histograms (7x7, chi2)": _scores(lbp, pairs, "chi2"),
    }
    return {name: verification_metrics(s, pairs.same, pairs.fold) for name, s in rows.items()}


def train(loss: str, out: Path, quick: bool) -> tuple[Path, float]:
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.face import FaceConfig, train_face

    trainer = TrainerConfig(epochs=None, progress=False, **({"max_steps": 20} if quick else {}))
    start = time.perf_counter()
    bundle = train_face(FaceConfig(loss=loss, trainer=trainer), out / loss)
    return bundle, time.perf_counter() - start


def throughput(bundle: Path, photos: list, repeats: int = 3) -> dict:
    """Images per second embedding the same photos in batches of 64 and one call per photo."""
    from omnivis.inference.face import FacePredictor

    predictor = FacePredictor.from_dir(bundle)
    predictor.embed(photos[:8])  # warm-up
    best = {}
    for name, size in (("batched", 64), ("one_at_a_time", 1)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.embed(photos, batch_size=size)
            times.append(time.perf_counter() - start)
        best[name] = len(photos) / min(times)
    return {"batched_images_per_s": round(best["batched"], 1),
            "one_at_a_time_images_per_s": round(best["one_at_a_time"], 1),
            "speedup": round(best["batched"] / best["one_at_a_time"], 2), "photos": len(photos)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 training steps: checks the script, not the model")
    args = parser.parse_args()

    from omnivis.data.builtin import load_builtin
    from omnivis.data.faces import all_pairs, identity_split

    data = load_builtin("builtin:orl-faces")
    train_idx, test_idx, held_out = identity_split(data, None, 0.25, seed=0)
    pairs = all_pairs(data.labels()[test_idx])
    results: dict = {"split": f"train s1-s30 ({len(train_idx)} photos), test {held_out[0]}-{held_out[-1]}: "
                              f"{int(pairs.same.sum())} genuine, {int((~pairs.same).sum())} impostor pairs",
                     "baselines": baselines(data, train_idx, test_idx, pairs), "omnivis": {}}
    with tempfile.TemporaryDirectory(prefix="omnivis-face-") as tmp:
        for loss in ("arcface", "softmax"):
            bundle, seconds = train(loss, Path(tmp), args.quick)
            metrics = json.loads((bundle / "metrics.json").read_text())
            config = json.loads((bundle / "config.json").read_text())
            results["omnivis"][loss] = {**{k: metrics[k] for k in (*FIGURES, "top1_accuracy", "open_set_f1")},
                                        "train_steps": metrics["train_steps"], "command_s": round(seconds, 1),
                                        "img_size": config["img_size"], "model": config["backbone"]}
            if loss == "arcface":
                results["throughput"] = throughput(bundle, [data.samples[i].source for i in test_idx] * 2)
    best = {k: max(b[k] for b in results["baselines"].values()) if k != "eer" else
            min(b[k] for b in results["baselines"].values()) for k in FIGURES}
    print(results["split"])
    print(f"{'method':42s} " + " ".join(f"{k:>16s}" for k in FIGURES))
    rows = [*results["baselines"].items(), *((f"omnivis {k} (defaults)", v) for k, v in results["omnivis"].items())]
    for name, row in rows:
        print(f"{name:42s} " + " ".join(f"{row.get(k, float('nan')):16.4f}" for k in FIGURES))
    arc = results["omnivis"]["arcface"]
    print("ArcFace vs the best baseline: " + ", ".join(
        f"{k} {arc[k]:.4f} vs {best[k]:.4f}" for k in FIGURES))
    t = results["throughput"]
    print(f"embedding {t['photos']} photos: batched {t['batched_images_per_s']} images/s, one at a time "
          f"{t['one_at_a_time_images_per_s']} images/s ({t['speedup']}x)")
    if not args.quick:
        merge_results({"face": results})


if __name__ == "__main__":
    main()
