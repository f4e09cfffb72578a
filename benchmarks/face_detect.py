"""Face detection: a detector trained with the defaults on generated face scenes vs OpenCV's Haar cascade.

Training data: 300 scenes of the ``train`` split (ORL people s1-s30 and LFW faces 0-49 pasted on
scikit-image photos, seed 0, 128 px) written as COCO by ``write_face_scenes``, exactly what
``omnivis face scenes --out DIR`` writes, and trained with nothing set but the data path
(``DetectConfig(data=...)``, the defaults of ``omnivis train detect --data DIR/annotations.json``).
Test data: 100 scenes of the ``test`` split (ORL people s31-s40 and LFW faces 50-99, seed 1): no
test face's person was trained on (see ``omnivis.data.face_scenes`` for LFW's caveat). Both
detectors are scored by one function through torchmetrics' COCO mAP (pycocotools backend); the
bundle is also scored by ``evaluate_detector`` (``omnivis eval``) as a check that the two agree.

Then both run on the scikit-image photos that show real people, against face boxes set by hand
(``PHOTO_FACES``), and on the other sample photos, where every box is a false alarm.

    python benchmarks/face_detect.py                 # the benchmark (trains for about 10-20 minutes)
    python benchmarks/face_detect.py --quick         # a tiny run that checks the script end to end
    python benchmarks/face_detect.py --results PATH  # merge the figures into PATH (default: benchmarks/results.json)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_file import merge_results  # benchmarks/results_file.py

SIZE = 128
TRAIN_SEED, TEST_SEED = 0, 1
N_TRAIN, N_TEST = 300, 100

# Faces in the scikit-image photos, [x0, y0, x1, y1] in the photo's own pixels. Read off by eye from
# 3x enlargements of each photo with a 10 px grid drawn over it: cheek (or ear) to cheek (or nose tip),
# hairline to chin. astronaut: Eileen Collins, frontal. camera: the cameraman, a three-quarter
# profile looking right (a frontal cascade is not expected to find it). No other photo in
# ``omnivis.data.builtin.PHOTO_NAMES`` shows a human face (chelsea is a cat; coins are ancient coins).
PHOTO_FACES: dict[str, list[list[float]]] = {
    "astronaut": [[178.0, 72.0, 270.0, 178.0]],
    "camera": [[180.0, 118.0, 256.0, 192.0]],
}


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def coverage(box, face) -> float:
    """Share of the hand-set ``face`` box that ``box`` covers: the scenes' boxes run over the hair, a
    hand-set face box from hairline to chin, so a box around the whole head has a low IoU with it
    but covers it whole."""
    ix = max(0.0, min(box[2], face[2]) - max(box[0], face[0]))
    iy = max(0.0, min(box[3], face[3]) - max(box[1], face[1]))
    return ix * iy / ((face[2] - face[0]) * (face[3] - face[1]))


def face_map(detector, images: list, truth: list[np.ndarray]) -> dict:
    """COCO mAP of ``detector`` (a face detector's ``detect``) on ``images`` with boxes ``truth``;
    plus recall, precision and false alarms at the detector's own operating point (IoU 0.5)."""
    from omnivis.metrics.detection import new_map_metric

    metric = new_map_metric()
    start = time.perf_counter()
    found = detector.detect(images)
    seconds = time.perf_counter() - start
    hits = alarms = 0
    for faces, boxes in zip(found, truth):
        pred = torch.tensor([f.box for f in faces], dtype=torch.float32).reshape(-1, 4)
        metric.update(
            [{"boxes": pred, "scores": torch.tensor([f.score for f in faces]), "labels": torch.ones(len(faces), dtype=torch.long)}],
            [{"boxes": torch.as_tensor(boxes).reshape(-1, 4), "labels": torch.ones(len(boxes), dtype=torch.long)}],
        )
        matched: set[int] = set()
        for f in sorted(faces, key=lambda f: -f.score):  # greedy IoU >= 0.5 matching, best score first
            ious = [(iou(f.box, b), k) for k, b in enumerate(boxes) if k not in matched]
            best = max(ious, default=(0.0, -1))
            if best[0] >= 0.5:
                matched.add(best[1])
            else:
                alarms += 1
        hits += len(matched)
    result = metric.compute()
    faces_total = int(sum(len(b) for b in truth))
    reported = hits + alarms
    return {"map50": float(result["map_50"]), "map": float(result["map"]), "map75": float(result["map_75"]),
            "recall": hits / max(faces_total, 1), "precision": hits / reported if reported else 0.0,
            "false_alarms": alarms, "faces": faces_total, "ms_per_image": 1000.0 * seconds / max(len(images), 1)}


def on_photos(detector) -> dict:
    """Per photo: the boxes found, and (photos with a hand-set face) the best IoU with it."""
    from skimage import data as skdata

    from omnivis.data.builtin import PHOTO_NAMES
    from omnivis.data.images import array_to_image

    rows = {}
    for name in PHOTO_NAMES:
        image = np.asarray(array_to_image(np.asarray(getattr(skdata, name)()), "RGB"))  # as builtin:photos
        faces = detector.detect([image])[0]
        truth = PHOTO_FACES.get(name, [])
        best = [max((iou(f.box, t) for f in faces), default=0.0) for t in truth]
        covered = [max((coverage(f.box, t) for f in faces), default=0.0) for t in truth]
        found = sum(b >= 0.5 for b in best)
        rows[name] = {"boxes": [f.to_dict() for f in faces], "faces": len(truth), "found": found,
                      "best_iou": [round(b, 3) for b in best], "best_coverage": [round(c, 3) for c in covered],
                      "false_alarms": len(faces) - found}
    return rows


def run(quick: bool = False, out: str | None = None) -> dict:
    """Write the scenes, train the default detector, score it and the Haar cascade."""
    from omnivis.data.coco import read_coco
    from omnivis.data.face_scenes import write_face_scenes
    from omnivis.data.images import load_image
    from omnivis.engine.config import TrainerConfig
    from omnivis.inference.detect import evaluate_detector
    from omnivis.inference.face_detect import BundleFaceDetector, HaarFaceDetector
    from omnivis.tasks.detect import DetectConfig, train_detector

    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="omnivis-bench-faces-"))
    n_train, n_test = (40, 16) if quick else (N_TRAIN, N_TEST)
    train = write_face_scenes(root / "train", n_train, SIZE, TRAIN_SEED, "train")
    test = write_face_scenes(root / "test", n_test, SIZE, TEST_SEED, "test")
    trainer = {"progress": False, "epochs": None}  # as the command: the length is sized by the data
    if quick:
        trainer["max_steps"] = 4
    bundle = root / "run"
    start = time.perf_counter()
    train_detector(DetectConfig(data=str(train), trainer=TrainerConfig(**trainer)), bundle)
    train_seconds = time.perf_counter() - start
    check = evaluate_detector(bundle, data=str(test), progress=False)

    records = read_coco(test).records
    images = [np.asarray(load_image(r.source, "RGB")) for r in records]
    truth = [r.boxes for r in records]
    trained = BundleFaceDetector(bundle, min_score=0.0)  # every box >= 0.05, as evaluate_detector scores
    haar = HaarFaceDetector()
    scores = {"trained": face_map(trained, images, truth), "haar": face_map(haar, images, truth)}
    operating = BundleFaceDetector(bundle, min_score=0.5)  # the default --min-score (warm: its time is reported)
    scores["trained_at_0.5"] = face_map(operating, images, truth)
    header = json.loads((bundle / "config.json").read_text())
    metrics = json.loads((bundle / "metrics.json").read_text())
    return {
        "train_scenes": n_train, "test_scenes": n_test, "size": SIZE, "train_seed": TRAIN_SEED, "test_seed": TEST_SEED,
        "train_seconds": train_seconds, "steps": metrics.get("train_steps"), "img_size": header["img_size"],
        "model": header["backbone"], "arch": header.get("arch"), "eval_check_map50": float(check["map50"]),
        "test_faces": int(sum(len(t) for t in truth)), "scores": scores,
        "photos": {"trained": on_photos(operating), "haar": on_photos(haar)}, "bundle": str(bundle),
    }


def _cell(x: dict) -> str:
    """``found/faces (best IoUs), false alarms`` for one photo's row."""
    if not x["faces"]:
        return f"-, {x['false_alarms']}"
    return (f"{x['found']}/{x['faces']} (IoU {', '.join(map(str, x['best_iou']))}; covers "
            f"{', '.join(f'{c:.0%}' for c in x['best_coverage'])}), {x['false_alarms']}")


def report(r: dict) -> None:
    s = r["scores"]
    t, h = s["trained"], s["haar"]
    print(f"face detection benchmark: {r['train_scenes']} train scenes (ORL s1-s30 + LFW 0-49, seed {r['train_seed']}), "
          f"{r['test_scenes']} test scenes with {r['test_faces']} faces (ORL s31-s40 + LFW 50-99, seed {r['test_seed']}), "
          f"{r['size']} px; detector: {r['arch']} on {r['model']} at {r['img_size']} px, defaults only, "
          f"{r['steps']} steps, {r['train_seconds']:.0f} s")
    print("| held-out scenes | trained (defaults) | Haar cascade | ratio trained / Haar |")
    print("|---|---|---|---|")
    for key, label in (("map50", "mAP50"), ("map", "mAP@[.5:.95]"), ("map75", "mAP75")):
        ratio = f"{t[key] / h[key]:.3f}" if h[key] > 0 else "-"
        print(f"| {label} | {t[key]:.4f} | {h[key]:.4f} | {ratio} |")
    o = s["trained_at_0.5"]
    print(f"| recall / precision at the default operating point (IoU 0.5) | {o['recall']:.3f} / {o['precision']:.3f} "
          f"(min score 0.5) | {h['recall']:.3f} / {h['precision']:.3f} | - |")
    print(f"| false alarms on the {r['test_scenes']} scenes | {o['false_alarms']} | {h['false_alarms']} | - |")
    print(f"| CPU ms per 128 px scene | {o['ms_per_image']:.1f} | {h['ms_per_image']:.1f} | - |")
    print(f"evaluate_detector (omnivis eval) on the same scenes: mAP50 {r['eval_check_map50']:.4f} "
          f"(this script's own scoring: {t['map50']:.4f})")
    print("| photo | hand-set faces | trained: found (best IoU; share of the face covered), false alarms | Haar: the same |")
    print("|---|---|---|---|")
    for name in r["photos"]["haar"]:
        a, b = r["photos"]["trained"][name], r["photos"]["haar"][name]
        if a["faces"] or a["boxes"] or b["boxes"]:
            print(f"| {name} | {a['faces']} | {_cell(a)} | {_cell(b)} |")
    quiet = [n for n in r["photos"]["haar"] if not (r["photos"]["trained"][n]["boxes"] or r["photos"]["haar"][n]["boxes"]
                                                   or r["photos"]["haar"][n]["faces"])]
    print(f"no box from either detector: {', '.join(quiet)}")
    print(f"bundle: {r['bundle']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="where to keep the scenes and the run (default: a temporary folder)")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent / "results.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = run(args.quick, args.out)
    report(r)
    if not args.quick:
        print(f"wrote {merge_results({'face_detect': r}, Path(args.results))}")


if __name__ == "__main__":
    main()
