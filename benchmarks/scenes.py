"""Detection and segmentation with the defaults on scenes unlike the builtin ones (issue 12).

The builtin shapes are 64 px circles, squares and triangles, 1-4 per scene, axis-aligned. These
scenes are 128 px with ellipses, rotated rectangles and five-pointed stars, 1-6 per scene, 10-56 px
across, at any angle and aspect ratio, on a textured gradient. ``write_scenes`` writes them as a COCO
file (boxes and RLE instance masks) and as a mask folder (``images/``, ``masks/``, ``classes.txt``).
Training sees ``--train-scenes`` scenes from seed 10 (the command holds out 20% of them for early
stopping) and nothing else (``omnivis train detect|segment`` with only the data path given); the
score is on 100 scenes from seed 11 through ``omnivis eval``. Targets (issue 12): mAP50 >= 0.90 and
mIoU >= 0.85. 300 training scenes is the issue's own trial; with that few, the defaults overfit.

    python benchmarks/scenes.py                             # both, 1,200 training scenes each
    python benchmarks/scenes.py detect                      # detection only
    python benchmarks/scenes.py detect --train-scenes 300   # the issue's trial (about 12 minutes)
    python benchmarks/scenes.py segment                     # 1,200 training scenes
    python benchmarks/scenes.py detect --quick    # a tiny run that checks the script end to end
    python benchmarks/scenes.py write DIR         # only write the data (DIR/train, DIR/test)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from results_file import merge_results  # benchmarks/results_file.py

CLASSES = ("ellipse", "rotated_box", "star")
SIZE = 128
TRAIN_SEED, TEST_SEED = 10, 11
TARGETS = {"detect": ("map50", 0.90), "segment": ("miou", 0.85)}
_MIN_VISIBLE = 30  # pixels; an object hidden more than this by later ones is dropped


def _outline(rng: np.random.Generator, kind: int) -> np.ndarray:
    """(K, 2) polygon around the origin: an ellipse, a rectangle or a star, before rotation."""
    radius = rng.uniform(5.0, 28.0)
    if kind == 0:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([radius * np.cos(t), radius * rng.uniform(0.35, 1.0) * np.sin(t)], axis=1)
    if kind == 1:
        w, h = radius, radius * rng.uniform(0.3, 1.0)
        return np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    r = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.55))
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A linear colour gradient with coarse blotches: not flat, so colour alone does not segment."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a, b = rng.uniform(40, 200, size=3), rng.uniform(40, 200, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y + 1.5) / 3.0
    image = a + (b - a) * ramp[..., None]
    blotches = np.kron(rng.normal(0, 12, size=(8, 8, 3)), np.ones((16, 16, 1)))
    return image + blotches


def make_scene(seed: int, index: int) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Scene ``index`` of ``seed``: (H x W x 3 uint8 image, class per object, visible mask per object)."""
    rng = np.random.default_rng([seed, index])
    image = _background(rng)
    kinds: list[int] = []
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 7))):
        kind = int(rng.integers(len(CLASSES)))
        angle = rng.uniform(0, np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = _outline(rng, kind) @ rotation.T + rng.uniform(8, SIZE - 8, size=2)
        canvas = Image.new("L", (SIZE, SIZE), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1)
        mask = np.asarray(canvas, dtype=bool)
        if not mask.any():
            continue
        colour = rng.uniform(0, 255, size=3)
        image[mask] = colour + rng.normal(0, 6, size=(int(mask.sum()), 3))
        for earlier in masks:
            earlier &= ~mask
        kinds.append(kind)
        masks.append(mask)
    image += rng.normal(0, 5, size=image.shape)
    keep = [i for i, m in enumerate(masks) if m.sum() >= _MIN_VISIBLE] or [int(np.argmax([m.sum() for m in masks]))]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), [kinds[i] for i in keep], [masks[i] for i in keep]


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def write_scenes(folder: str | Path, n: int, seed: int) -> dict[str, Path]:
    """Write ``n`` scenes of ``seed`` under ``folder``: ``coco/annotations.json`` (+ PNGs) and a mask
    folder ``masks/`` (``images/``, ``masks/``, ``classes.txt``; background is class 0)."""
    from omnivis.data.coco import write_coco
    from omnivis.data.detection_records import DetectionData, DetectionRecord

    folder = Path(folder)
    mask_root = folder / "masks"
    (mask_root / "images").mkdir(parents=True, exist_ok=True)
    (mask_root / "masks").mkdir(parents=True, exist_ok=True)
    (mask_root / "classes.txt").write_text("\n".join(("background", *CLASSES)) + "\n")
    records = []
    for i in range(n):
        image, kinds, masks = make_scene(seed, i)
        records.append(DetectionRecord(
            source=image, boxes=np.array([_box(m) for m in masks], dtype=np.float32).reshape(-1, 4),
            labels=np.array(kinds, dtype=np.int64), masks=np.stack(masks), name=f"scene-{seed}-{i:04d}", image_id=i,
        ))
        classes = np.zeros((SIZE, SIZE), dtype=np.uint8)
        for kind, mask in zip(kinds, masks):
            classes[mask] = kind + 1
        Image.fromarray(image).save(mask_root / "images" / f"{i:04d}.png")
        Image.fromarray(classes, mode="L").save(mask_root / "masks" / f"{i:04d}.png")
    coco = write_coco(DetectionData(records, list(CLASSES), f"scenes seed {seed}"), folder / "coco" / "annotations.json")
    return {"coco": coco, "masks": mask_root}


def object_sides(n: int, seed: int) -> np.ndarray:
    """Shorter box side of every object in the first ``n`` scenes (for the report)."""
    sides = []
    for i in range(n):
        for mask in make_scene(seed, i)[2]:
            x1, y1, x2, y2 = _box(mask)
            sides.append(min(x2 - x1, y2 - y1))
    return np.asarray(sides)


def run(task: str, quick: bool = False, out: str | None = None, train_scenes: int = 1200) -> dict:
    """Write the data, train ``task`` with its defaults on the training scenes, score the test scenes."""
    root = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"omnivis-bench-scenes-{task}-"))
    n_train, n_test = (24, 8) if quick else (train_scenes, 100)
    train = write_scenes(root / "train", n_train, TRAIN_SEED)
    test = write_scenes(root / "test", n_test, TEST_SEED)
    bundle = root / "run"
    trainer = {"progress": False, "epochs": None}  # as the command: the length is sized by the data
    if quick:
        trainer["max_steps"] = 4
    start = time.perf_counter()
    if task == "detect":
        from omnivis.engine.config import TrainerConfig
        from omnivis.inference.detect import evaluate_detector
        from omnivis.tasks.detect import DetectConfig, train_detector

        train_detector(DetectConfig(data=str(train["coco"]), trainer=TrainerConfig(**trainer)), bundle)
        seconds = time.perf_counter() - start
        metrics = evaluate_detector(bundle, data=str(test["coco"]), progress=False)
    else:
        from omnivis.engine.config import TrainerConfig
        from omnivis.inference.segment import evaluate_segmenter
        from omnivis.tasks.segment import SegmentConfig, train_segmenter

        train_segmenter(SegmentConfig(data=str(train["masks"]), trainer=TrainerConfig(**trainer)), bundle)
        seconds = time.perf_counter() - start
        metrics = evaluate_segmenter(bundle, data=str(test["masks"]), progress=False)
    header = json.loads((bundle / "config.json").read_text())
    key, target = TARGETS[task]
    return {"task": task, "metric": key, "value": float(metrics[key]), "target": target,
            "train_seconds": seconds, "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "data_defaults": header.get("data_defaults"), "bundle": str(bundle)}


def report(task: str, r: dict, train_scenes: int, test_scenes: int) -> None:
    sides = object_sides(100, TRAIN_SEED)
    print(f"scenes benchmark ({task}): {train_scenes} training scenes (seed {TRAIN_SEED}), {test_scenes} test scenes "
          f"(seed {TEST_SEED}), {SIZE} px; object shorter side p10/median/p90 {np.percentile(sides, 10):.0f}/"
          f"{np.median(sides):.0f}/{np.percentile(sides, 90):.0f} px; defaults only")
    print("| metric | omnivis defaults | target | ratio |")
    print("|---|---|---|---|")
    print(f"| {r['metric']} | {r['value']:.4f} | {r['target']} | {r['value'] / r['target']:.3f} |")
    print(f"| training seconds | {r['train_seconds']:.1f} | - | - |")
    print("other metrics:", json.dumps({k: round(v, 4) for k, v in r["metrics"].items()}))
    print("data defaults:", json.dumps(r["data_defaults"], indent=1))
    print(f"bundle: {r['bundle']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", nargs="?", default="all", choices=("all", "detect", "segment", "write"))
    parser.add_argument("folder", nargs="?", help="write: where to put the data; else where to keep the run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train-scenes", type=int, default=1200)
    args = parser.parse_args()
    if args.task == "write":
        if not args.folder:
            parser.error("write needs a folder")
        print(write_scenes(Path(args.folder) / "train", args.train_scenes, TRAIN_SEED),
              write_scenes(Path(args.folder) / "test", 100, TEST_SEED))
        return
    for task in ("detect", "segment") if args.task == "all" else (args.task,):
        folder = str(Path(args.folder) / task) if args.folder and args.task == "all" else args.folder
        r = run(task, args.quick, folder, args.train_scenes)
        report(task, r, *((24, 8) if args.quick else (args.train_scenes, 100)))
        if not args.quick:
            merge_results({f"scenes_{task}_{args.train_scenes}": {**r, "train_scenes": args.train_scenes}})


if __name__ == "__main__":
    main()
