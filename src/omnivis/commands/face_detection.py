"""``omnivis face detect | anonymize | scenes``: find faces, hide them, or make scenes to train a
face detector on. ``omnivis.commands.face`` creates the ``face`` group and calls
:func:`register_detection`.

DETECTOR is ``classical`` (OpenCV's Haar cascade, nothing to train) or a detect bundle with a
``face`` class. Images may be files or folders (searched recursively), as for ``omnivis predict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import track
from rich.table import Table

from omnivis.commands._shared import console, output_names, print_json
from omnivis.errors import ConfigError

DETECTOR_HELP = "'classical' (OpenCV's Haar cascade) or a detect bundle folder with a 'face' class."
MIN_SCORE_HELP = "Detect bundles: keep faces scoring at least this (0..1); the Haar cascade ignores it."


def _run(detector_spec: str, inputs: list[Path], out: Path, min_score: float, write, label: str,
         progress: bool) -> list[dict]:
    """Detect faces in every input, one image at a time (a folder of photos need not fit in memory),
    hand each ``(RGB array, faces)`` to ``write`` for its output picture, and return the JSON rows."""
    import numpy as np

    from omnivis.data.images import expand_image_paths, load_images
    from omnivis.inference.face_detect import load_face_detector

    detector = load_face_detector(detector_spec, min_score=min_score)
    paths = expand_image_paths(inputs)
    jobs = list(zip(paths, output_names(paths)))
    for path, name in jobs:  # an anonymized copy must never replace its original
        if (out / name).resolve() == path.resolve():
            raise ConfigError(f"{path}: --out {out} would overwrite this input; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, name in track(jobs, description=label, transient=True,
                            console=console, disable=not progress):  # --json: stdout holds the JSON only
        image = np.asarray(load_images([path], "RGB")[0])
        faces = detector.detect([image])[0]
        write(image, faces).save(out / name)
        rows.append({"image": str(path), "output": str(out / name), "faces": [f.to_dict() for f in faces]})
    return rows


def _report(rows: list[dict], out: Path, detector: str, as_json: bool, extra: dict) -> None:
    """Write ``out/faces.json`` and print it (``--json``) or a table and where the outputs are."""
    from omnivis.fileio import atomic_write_bytes

    report = {"detector": detector, **extra, "images": rows}
    atomic_write_bytes(out / "faces.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    if as_json:
        print_json(report)
        return
    table = Table("image", "faces", "boxes (x0, y0, x1, y1) score")
    table.columns[0].overflow = "fold"
    for r in rows:
        boxes = "; ".join(f"{', '.join(f'{v:.0f}' for v in f['box'])} {f['score']:.2f}" for f in r["faces"])
        table.add_row(r["image"], str(len(r["faces"])), boxes or "-")
    console.print(table)
    console.print(f"outputs: [bold]{out}[/] ({len(rows)} images, faces.json)")


def face_detect(
    detector: Annotated[str, typer.Argument(help=DETECTOR_HELP)],
    inputs: Annotated[list[Path], typer.Argument(help="Images or folders of images.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the drawn images and faces.json.")],
    min_score: Annotated[float, typer.Option("--min-score", help=MIN_SCORE_HELP)] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print faces.json instead of a table.")] = False,
) -> None:
    """Find faces and draw them into --out, with faces.json.

    Each image is drawn with its boxes and scores; faces.json lists every image's boxes (x0, y0, x1,
    y1 in original pixels, left to right by box centre) with their scores.
    """
    from omnivis.inference.face_detect import draw_faces

    rows = _run(detector, inputs, out, min_score, draw_faces, "detecting faces", progress=not as_json)
    _report(rows, out, detector, as_json, {"min_score": min_score})


def face_anonymize(
    detector: Annotated[str, typer.Argument(help=DETECTOR_HELP)],
    inputs: Annotated[list[Path], typer.Argument(help="Images or folders of images.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the anonymized copies (PNG) and faces.json.")],
    blur: Annotated[bool, typer.Option("--blur/--pixelate", help="Hide faces by a strong Gaussian blur, or by ~8 "
                                       "blocks across each face.")] = True,
    min_score: Annotated[float, typer.Option("--min-score", help=MIN_SCORE_HELP)] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print faces.json instead of a table.")] = False,
) -> None:
    """Write copies of images with every face blurred or pixelated.

    Each copy (PNG, in --out) has every face the detector finds hidden; faces.json lists the boxes
    that were hidden. A face the detector misses stays visible: look at the copies.
    """
    from PIL import Image

    from omnivis.inference.face_detect import anonymize

    method = "blur" if blur else "pixelate"
    rows = _run(detector, inputs, out, min_score,
                lambda image, faces: Image.fromarray(anonymize(image, faces, method)), "anonymizing",
                progress=not as_json)
    _report(rows, out, detector, as_json, {"min_score": min_score, "method": method})


def face_scenes(
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG scenes, annotations.json and scenes.json.")],
    n: Annotated[int, typer.Option("--n", help="Number of scenes (about 15% hold no face).")] = 300,
    size: Annotated[int, typer.Option("--size", help="Side of the square scenes in pixels (>= 64).")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Scene i depends only on (seed, split, i, size).")] = 0,
    split: Annotated[str, typer.Option("--split", help="train: ORL people s1-s30 + LFW faces 0-49; test: ORL "
                                       "s31-s40 + LFW faces 50-99.")] = "train",
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Write generated face scenes as a COCO detection set.

    Real ORL and LFW faces are pasted on scikit-image photos, 0-4 per scene, with one class, face;
    train a detector on them with: omnivis train detect --data OUT/annotations.json
    """
    from omnivis.data.face_scenes import SPLITS, write_face_scenes

    if split not in SPLITS:
        raise ConfigError(f"--split must be train or test, got '{split}'")
    path = write_face_scenes(out, n, size, seed, split)
    faces = sum(len(a) for a in json.loads((out / "scenes.json").read_text())["faces"])
    summary = {"annotations": str(path), "images": n, "faces": faces, "size": size, "seed": seed, "split": split}
    if as_json:
        print_json(summary)
        return
    console.print(f"{n} scenes ({split}, seed {seed}, {size} px) with {faces} faces: [bold]{path}[/]")
    if split == "train":
        console.print(f"train a face detector: omnivis train detect --data {path} --out runs/face-det")
    else:
        console.print(f"score a face detector: omnivis eval runs/face-det --data {path}")


def register_detection(face_app: typer.Typer) -> None:
    """Add ``detect``, ``anonymize`` and ``scenes`` to the ``omnivis face`` group."""
    face_app.command("detect")(face_detect)
    face_app.command("anonymize")(face_anonymize)
    face_app.command("scenes")(face_scenes)
