"""``omnivis edit BUNDLE IMAGE... --out DIR``: super-resolve, denoise, inpaint, enhance or restyle images
of any size with an edit bundle (``omnivis train edit``), tile by tile, on CPU in fp32 or on a GPU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, output_names, print_json
from omnivis.errors import ConfigError


def edit_command(
    bundle: Annotated[Path, typer.Argument(help="An edit bundle (omnivis train edit).")],
    inputs: Annotated[list[Path], typer.Argument(help="Images or folders of images (grey ones become RGB).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the edited images (PNG) and edits.json.")],
    mask: Annotated[Optional[Path], typer.Option(help="Inpaint: a PNG of the image's size; white (nonzero) marks "
                                                  "what to fill.")] = None,
    box: Annotated[Optional[str], typer.Option(help="Inpaint: the rectangle x,y,w,h (pixels) to fill, instead of "
                                               "--mask.")] = None,
    style: Annotated[Optional[Path], typer.Option(help="Style bundles: the style image every input is restyled "
                                                  "after.")] = None,
    strength: Annotated[float, typer.Option(help="0 keeps the input (upscaled), 1 is the network's output; in "
                                            "between blends them (not for inpaint; style: AdaIN's alpha).")] = 1.0,
    tile: Annotated[Optional[int], typer.Option(help="Tile side in input pixels (default: the bundle's, or smaller "
                                                "on a large image so the extra memory stays under twice its 8-bit "
                                                "input + output; 0: the whole image at once).")] = None,
    scale: Annotated[Optional[int], typer.Option(help="Superres: the factor you expect (an error if the bundle "
                                                 "was trained for another).")] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse larger images (width x height) before decoding them.")]
    = 89_478_485,
    steps: Annotated[int, typer.Option(help="Diffusion bundles (RePaint): denoising steps.")] = 50,
    seed: Annotated[int, typer.Option(help="Diffusion bundles (RePaint): the same seed gives the same fill.")] = 0,
    class_: Annotated[Optional[str], typer.Option("--class", help="Diffusion bundles (RePaint), class-conditional: "
                                                  "the class to fill with.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N (fp32 on every device).")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print edits.json instead of a table.")] = False,
) -> None:
    """Edit images with an edit bundle; each result is written to --out as PNG, with edits.json.

    Images are processed one at a time and each in tiles with overlap, cross-faded so no seam shows:
    memory stays bounded whatever the image size. A diffusion generator bundle (omnivis train generate
    --method diffusion) fills --mask or --box by RePaint, at the bundle's own image size.
    """
    from PIL import Image

    from omnivis.bundle import load_bundle
    from omnivis.data.images import expand_image_paths
    from omnivis.fileio import atomic_write_bytes
    from omnivis.inference.edit import EditPredictor, parse_box

    box_value = parse_box(box) if box is not None else None
    if load_bundle(bundle).task == "generate":
        from omnivis.inference.repaint import RePaintEditor

        predictor = RePaintEditor(bundle, device, steps=steps, seed=seed, class_=class_)
    else:
        predictor = EditPredictor.from_dir(bundle, device=device)
    paths = expand_image_paths(inputs)
    jobs = list(zip(paths, output_names(paths)))
    for path, name in jobs:
        if (out / name).resolve() == path.resolve():
            raise ConfigError(f"{path}: --out {out} would overwrite this input; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, name in jobs:
        started = time.perf_counter()
        edited = predictor.edit(path, mask=mask, box=box_value, style=style, strength=strength, tile=tile, scale=scale,
                                max_pixels=max_pixels, progress=not as_json)
        seconds = time.perf_counter() - started
        Image.fromarray(edited).save(out / name)
        rows.append({"image": str(path), "output": str(out / name), "size": [edited.shape[1], edited.shape[0]],
                     "seconds": round(seconds, 3), "megapixels_per_s": round(edited.shape[0] * edited.shape[1] / 1e6 / seconds, 3)})
    report = {"bundle": str(bundle), "op": predictor.op, "scale": predictor.scale, "strength": strength,
              "tile": "auto" if tile is None else tile, "largest_tile": predictor.tile, "images": rows}
    atomic_write_bytes(out / "edits.json", (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    if as_json:
        print_json(report)
        return
    table = Table("image", "output", "size", "s", "Mpx/s", title=f"{predictor.op} x{predictor.scale}")
    for r in rows:
        table.add_row(r["image"], r["output"], f"{r['size'][0]}x{r['size'][1]}", f"{r['seconds']:.2f}",
                      f"{r['megapixels_per_s']:.2f}")
    console.print(table)
    console.print(f"outputs: [bold]{out}[/] ({len(rows)} images, edits.json)")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("edit")(edit_command)
