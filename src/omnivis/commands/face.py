"""``omnivis face``: enrol a gallery, identify and verify faces, calibrate the threshold; detect and
anonymize faces (``commands/face_detection.py``). Training is ``omnivis train face``; evaluation is
``omnivis eval`` on a face bundle. Every command is a thin layer over ``inference/face*.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json
from omnivis.errors import OmnivisError

face_app = typer.Typer(help="Face recognition: enroll, identify, verify, calibrate, detect, anonymize.",
                       no_args_is_help=True)

Detector = typer.Option(None, "--detector", help="Find faces first: 'classical' (OpenCV's Haar cascade) or a "
                        "detect bundle; without it each photo is one face (a crop).")


def _detector(spec: str | None):
    if spec is None:
        return None
    from omnivis.inference.face_detect import load_face_detector

    return load_face_detector(spec)


def _predictor(bundle: Path):
    from omnivis.inference.face import FacePredictor

    return FacePredictor.from_dir(bundle)


@face_app.command("enroll")
def enroll_command(
    bundle: Path = typer.Argument(..., help="A face bundle (omnivis train face)."),
    gallery: Path = typer.Option(..., help="A folder with one sub-folder of photos per person."),
    out: Path = typer.Option(..., help="The index folder (index.safetensors + index.json); with --add, "
                             "an existing index to extend."),
    add: bool = typer.Option(False, "--add", help="Add the gallery's people to the index in --out."),
    replace: bool = typer.Option(False, "--replace", help="With --add: re-enrol people already in the index."),
    detector: Optional[str] = Detector,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Embed a gallery of people into an index that identify searches."""
    from omnivis.inference.face_index import INDEX_MANIFEST, enroll, load_index

    predictor = _predictor(bundle)
    if (out / INDEX_MANIFEST).exists() and not add:
        raise OmnivisError(f"{out}: already holds an index; pass --add to extend it or choose another --out")
    index = load_index(out, predictor.setting()) if add else None
    index = enroll(predictor, gallery, index, replace=replace, detector=_detector(detector), progress=not as_json)
    index.save(out)
    summary = {"index": str(out), "people": len(index.people), "photos": len(index.names),
               "skipped": [{"photo": n, "reason": r} for n, r in index.skipped]}
    if as_json:
        print_json(summary)
        return
    for name, reason in index.skipped[:10]:
        console.print(f"[yellow]skipped[/] {name}: {reason}")
    console.print(f"enrolled {summary['people']} people ({summary['photos']} photos) into [bold]{out}[/]")


@face_app.command("identify")
def identify_command(
    bundle: Path = typer.Argument(..., help="A face bundle."),
    index: Path = typer.Argument(..., help="An index from omnivis face enroll (made with this bundle)."),
    images: List[Path] = typer.Argument(..., help="Photos or folders of photos."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many people to list per face."),
    detector: Optional[str] = Detector,
    as_json: bool = typer.Option(False, "--json", help="Print the answers as JSON."),
) -> None:
    """Name every face: the closest enrolled person, or 'unknown' below the bundle's threshold."""
    from omnivis.data.images import expand_image_paths
    from omnivis.inference.face_index import identify, load_index

    predictor = _predictor(bundle)
    gallery = load_index(index, predictor.setting())
    paths = expand_image_paths(images)
    results = identify(predictor, gallery, paths, top_k=top_k, detector=_detector(detector),
                       names=[str(p) for p in paths])
    if as_json:
        print_json(results)
        return
    t = predictor.threshold
    table = Table("image", "face", "identity", "score", f"top-{top_k}",
                  title=f"threshold {t['value']:.4f} (FAR {t['far']:g})")
    for r in results:
        if not r["faces"]:
            table.add_row(r["image"], "-", "no face found", "", "")
        for f in r["faces"]:
            others = ", ".join(f"{c['identity']} {c['score']:.2f}" for c in f["top_k"])
            table.add_row(r["image"], str(f["box"]) if "box" in f else "whole photo", f["identity"], f"{f['score']:.3f}", others)
    console.print(table)


@face_app.command("verify")
def verify_command(
    bundle: Path = typer.Argument(..., help="A face bundle."),
    images: List[Path] = typer.Argument(None, help="Two photos: are they the same person?"),
    pairs: Optional[Path] = typer.Option(None, help="A pairs file (LFW pairs.txt format) instead of two photos."),
    root: Optional[Path] = typer.Option(None, help="With --pairs: the folder of people it names (default: its folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the decisions as JSON."),
) -> None:
    """Same person or not, with the score, the threshold and the FAR it was calibrated for."""
    predictor = _predictor(bundle)
    if pairs is not None:
        if images:
            raise OmnivisError("give two photos or --pairs, not both")
        from omnivis.data.faces import read_pairs

        photos, found = read_pairs(pairs, root or pairs.parent)
        first, second = found.first.tolist(), found.second.tolist()
    elif images and len(images) == 2:
        photos, first, second = list(images), [0], [1]
    else:
        raise OmnivisError(f"verify takes two photos (got {len(images or [])}) or --pairs FILE")
    decisions = [{"first": str(photos[a]), "second": str(photos[b]), **d}
                 for a, b, d in zip(first, second, predictor.verify_pairs(photos, first, second))]
    if pairs is not None:
        for d, same in zip(decisions, found.same.tolist()):
            d["labelled_same"] = bool(same)
    if as_json:
        print_json(decisions)
        return
    table = Table("first", "second", "same", "score", "threshold (FAR)")
    for d in decisions:
        table.add_row(d["first"], d["second"], "yes" if d["same"] else "no", f"{d['score']:.4f}",
                      f"{d['threshold']:.4f} ({d['far']:g})")
    console.print(table)
    if pairs is not None:
        right = sum(d["same"] == d["labelled_same"] for d in decisions)
        console.print(f"{right} of {len(decisions)} pairs decided as labelled ({right / len(decisions):.4f})")


@face_app.command("calibrate")
def calibrate_command(
    bundle: Path = typer.Argument(..., help="A face bundle."),
    data: Optional[str] = typer.Option(None, help="Held-out people (a folder, builtin:orl-faces or a pairs.txt; "
                                       "default: the bundle's held-out people)."),
    far: float = typer.Option(0.01, help="The false-accept rate to hold: the share of impostor pairs accepted."),
    split: str = typer.Option("auto", help="auto | val | all (auto: the bundle's held-out people of its own data)."),
    images: Optional[Path] = typer.Option(None, help="With a pairs.txt --data: the folder of people it names."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Choose the decision threshold for a false-accept rate on held-out pairs and store it in the bundle."""
    from omnivis.inference.face import calibrate_face

    result = calibrate_face(bundle, data=data, far=far, split=split, images=str(images) if images else None,
                            progress=not as_json)
    if as_json:
        print_json(result)
        return
    console.print(f"threshold [bold]{result['threshold']:.4f}[/] for FAR {far:g} on {result['impostor_pairs']} "
                  f"impostor and {result['genuine_pairs']} genuine pairs of {result['data']}: measured FAR "
                  f"{result['far_measured']:.4f}, TAR {result['tar_measured']:.4f}; stored in {bundle}/config.json")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    from omnivis.commands.face_detection import register_detection

    register_detection(face_app)
    app.add_typer(face_app, name="face")
