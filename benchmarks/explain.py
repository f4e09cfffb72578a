"""Do the maps point at the object? Saliency peaks vs the object's mask on one-shape scenes, CNN and ViT.

Scenes with exactly one circle, square or triangle (``make_shapes(..., max_objects=1)``, 64 px) are
written as a class folder (3,000 train scenes of seed 0, 200 test scenes of seed 1; with 600 the
default CNN stayed at 0.42 test accuracy) and a classifier is trained on it with
``omnivis train classify``'s defaults, once with the default CNN, once with the same CNN and
``--output-stride 8`` and once with ``omnivis_vit_tiny``.
For every correctly classified test image, each method's map peak (``omnivis explain``'s ``peak``) is
checked against the object's mask (and, as a second column, whether it lies within the pointing
game's tolerance of it: 15 px at 224 px, 4.3 px here). References in the same run: the image centre
as the "peak" and a uniformly random pixel (its hit rate is the mean mask area). The model-randomization test reports the
mean Spearman correlation between the trained model's maps and those of the model with its top
re-initialized (target: < 0.5 for Grad-CAM).

    python benchmarks/explain.py            # train the three models with the defaults (20-30 minutes)
    python benchmarks/explain.py --quick    # 2 epochs, 120 scenes: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from results_file import merge_results  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent
TARGET_SHARE = 0.90
TARGET_SPEARMAN = 0.5
SCORECAM_IMAGES = 50  # Score-CAM runs one forward per channel per image (3 minutes per 60 images for the ViT)
# kind -> (backbone, options beyond the defaults); cnn8 is the default CNN with --output-stride 8: its
# last stage keeps an 8 x 8 map at 64 px (2 x 2 at the default stride 32)
MODELS = {"cnn": ("omnivis_resnet_tiny", {}), "cnn8": ("omnivis_resnet_tiny", {"output_stride": 8}),
          "vit": ("omnivis_vit_tiny", {})}
METHODS = {"cnn": ("gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam", "layercam", "gradcam@layer3",
                   "gradcam@layer4"),
           "cnn8": ("gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam", "layercam", "gradcam@layer3",
                    "gradcam@layer2", "layercam@layer1"),
           "vit": ("gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam", "layercam", "rollout")}
# the pointing game's tolerance (Zhang et al. 2016: 15 px on images of about 224 px) scaled to 64 px
TOLERANCE_PX = 15 * 64 / 224


def write_scenes(root: Path, n: int, seed: int, img_size: int = 64) -> tuple[Path, list[dict]]:
    """One-object scenes as ``root/CLASS/NNNN.png``; returns the folder and per scene its path, class and mask."""
    from omnivis.data.builtin import SHAPE_CLASSES, make_shapes

    scenes = make_shapes(n, img_size, seed, min_objects=1, max_objects=1).scenes
    rows = []
    for i, scene in enumerate(scenes):
        label = SHAPE_CLASSES[int(scene.labels[0])]
        path = root / label / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(path)
        rows.append({"path": path, "label": label, "mask": scene.masks[0].astype(bool)})
    return root, rows


def peak_hits(report: dict, test: list[dict]) -> dict:
    """Share of correctly classified test images whose map peak lies on the object, and within the
    pointing game's tolerance of it."""
    from scipy.ndimage import distance_transform_edt

    hits, near, correct = 0, 0, 0
    by_class: dict[str, list[int]] = {}  # class -> [peaks on the object, correctly classified]
    for row, result in zip(test, report["results"]):
        (e,) = result["explanations"]
        if e["predicted"] != row["label"]:
            continue
        correct += 1
        x, y = e["peak"]
        on_object = bool(row["mask"][y, x])
        hits += on_object
        near += bool(distance_transform_edt(~row["mask"])[y, x] <= TOLERANCE_PX)
        counts = by_class.setdefault(row["label"], [0, 0])
        counts[0] += on_object
        counts[1] += 1
    return {"correct": correct, "peak_on_object": hits / max(correct, 1),
            "peak_within_tolerance": near / max(correct, 1),
            "peak_on_object_by_class": {label: h / n for label, (h, n) in sorted(by_class.items())}}


def run(quick: bool = False, threads: int = 2) -> dict:
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.inference.classify import ClassifyPredictor
    from omnivis.inference.explain_run import explain_images
    from omnivis.inference.explain_tasks import adapter_for
    from omnivis.tasks.classify import ClassifyConfig, train_classifier

    torch.set_num_threads(threads)
    n_train, n_test = (120, 60) if quick else (3000, 200)
    results: dict = {"train_scenes": n_train, "test_scenes": n_test}
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, _ = write_scenes(Path(tmp) / "train", n_train, seed=0)
        _, test = write_scenes(Path(tmp) / "test", n_test, seed=1)
        masks = np.stack([row["mask"] for row in test])
        centre = masks[:, masks.shape[1] // 2, masks.shape[2] // 2]
        results["reference_centre"] = float(centre.mean())
        results["reference_random_pixel"] = float(masks.mean())
        for kind, (model, options) in MODELS.items():
            config = ClassifyConfig(data=str(train_dir), model=model, **options,
                                    trainer=TrainerConfig(epochs=2 if quick else None, progress=False, seed=0))
            start = time.perf_counter()
            bundle = train_classifier(config, Path(tmp) / kind)
            seconds = time.perf_counter() - start
            predictor = ClassifyPredictor.from_dir(bundle)
            adapter = adapter_for(predictor)
            paths = [row["path"] for row in test]
            labels = [predictor.classes[int(p.argmax())] for p in predictor.predict_proba(paths)]
            accuracy = float(np.mean([a == row["label"] for a, row in zip(labels, test)]))
            entry = {"model": model, "options": options, "train_seconds": seconds, "test_accuracy": accuracy,
                     "epochs": json.loads((Path(bundle) / "config.json").read_text())["train_config"]["trainer"]["epochs"],
                     "methods": {}}
            for method in METHODS[kind]:  # "METHOD@LAYER": the method at another layer than the default
                start = time.perf_counter()
                scored = test[:SCORECAM_IMAGES] if method == "scorecam" else test
                name, _, layer = method.partition("@")
                report = explain_images(adapter, [row["path"] for row in scored], method=name, layer=layer or None,
                                        sanity=True, batch_size=50)
                if method in ("gradcam", "eigencam"):
                    entry["layer"] = report["layer"]
                entry["methods"][method] = {**peak_hits(report, scored), "images": len(scored),
                                            "sanity_spearman": report["sanity"]["mean_spearman"],
                                            "seconds": time.perf_counter() - start}
                print(f"  {kind} {method}: {entry['methods'][method]}", flush=True)
            results[kind] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = run(args.quick, args.threads)
    print(f"\nsaliency peak on the object, correctly classified one-shape test scenes ({result['test_scenes']}, seed 1)")
    print(f"references: image centre {result['reference_centre']:.3f}, random pixel {result['reference_random_pixel']:.3f}"
          f"; target >= {TARGET_SHARE:.2f}, Grad-CAM randomization Spearman < {TARGET_SPEARMAN}")
    print(f"{'model':6}{'method':15}{'on object':>10}{'/ centre':>10}{f'<= {TOLERANCE_PX:.1f} px':>10}{'Spearman':>10}"
          f"{'seconds':>9}   on object, by class")
    for kind in MODELS:
        entry = result[kind]
        options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in entry["options"].items())
        print(f"{kind} {entry['model']} {options}: accuracy {entry['test_accuracy']:.3f} ({entry['epochs']} epochs, {entry['train_seconds']:.0f} s), layer {entry['layer']}")
        for method, m in entry["methods"].items():
            ratio = m["peak_on_object"] / max(result["reference_centre"], 1e-9)
            per_class = "  ".join(f"{label} {share:.2f}" for label, share in m["peak_on_object_by_class"].items())
            print(f"{kind:6}{method:15}{m['peak_on_object']:>10.3f}{ratio:>10.2f}{m['peak_within_tolerance']:>10.3f}"
                  f"{m['sanity_spearman']:>10.3f}{m['seconds']:>9.1f}   {per_class}")
    gradcam = [result[k]["methods"]["gradcam"] for k in MODELS]
    for kind, g in zip(MODELS, gradcam):
        print(f"meets targets (Grad-CAM, {kind}): "
              f"{g['peak_on_object'] >= TARGET_SHARE and g['sanity_spearman'] < TARGET_SPEARMAN}")
    if not args.quick:
        merge_results({"explain": result})


if __name__ == "__main__":
    main()
