"""``omnivis zeroshot`` and ``omnivis search``: an align bundle (``omnivis train align``) asked in words.

Thin layers over ``inference/align.py`` and ``inference/text_search.py``; text-to-image is
``omnivis generate BUNDLE --prompt`` on a text-conditioned generator.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from omnivis.commands._shared import console, print_json
from omnivis.errors import OmnivisError

TextEncoderOption = typer.Option(None, "--text-encoder", help="The text encoder (default: the one the bundle was "
                                 "trained with; another one is refused).")


def zeroshot_command(
    bundle: Path = typer.Argument(..., help="An align bundle (omnivis train align)."),
    inputs: List[Path] = typer.Argument(..., help="Images or folders of images."),
    labels: Optional[str] = typer.Option(None, help='Comma-separated label texts, e.g. "a red circle,a blue square" '
                                         "(default: the labels of the bundle's training data)."),
    labels_file: Optional[Path] = typer.Option(None, help="A file with one label text per line (added to --labels)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many labels to list per image."),
    text_encoder: Optional[str] = TextEncoderOption,
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON."),
) -> None:
    """Classify images by text: each image gets the label text its embedding is closest to.

    The labels need not have been seen in training; the bundle's text encoder embeds them.
    """
    from omnivis.data.images import expand_image_paths
    from omnivis.inference.align import AlignPredictor, parse_labels

    predictor = AlignPredictor.from_dir(bundle, text_encoder=text_encoder)
    chosen = parse_labels(labels, labels_file) if labels or labels_file else None
    paths = expand_image_paths(inputs)
    results = predictor.predict(paths, top_k=top_k, names=[str(p) for p in paths], labels=chosen)
    if as_json:
        print_json({"labels": chosen or predictor.labels, "predictions": results})
        return
    shown = len(results[0]["top_k"]) if results else top_k
    table = Table("image", "label", "score", f"top-{shown}", title=f"zero-shot with {bundle}")
    for row in results:
        rest = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["top_k"][1:])
        table.add_row(row["image"], row["label"], f"{row['score']:.3f}", rest)
    console.print(table)


def search_command(
    bundle: Path = typer.Argument(..., help="An align bundle (omnivis train align)."),
    queries: List[str] = typer.Argument(..., help='What to look for, e.g. "a green star" (several: one search each).'),
    index: Optional[Path] = typer.Option(None, help="An index folder (written by --images ... --index DIR), or a "
                                         "folder of images to embed now without writing anything."),
    images: Optional[Path] = typer.Option(None, help="Embed this folder of images; with --index, save the index "
                                          "there for later searches."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="How many images per query."),
    out: Optional[Path] = typer.Option(None, help="Also draw each query's best images into this PNG."),
    text_encoder: Optional[str] = TextEncoderOption,
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Find images by text: the images whose embeddings are closest to each query's."""
    from omnivis.inference.align import AlignPredictor
    from omnivis.inference.text_search import build_index, is_index, load_index, save_index

    if index is None and images is None:
        raise OmnivisError("say where to search: --index DIR (an index or an image folder) and/or --images FOLDER")
    predictor = AlignPredictor.from_dir(bundle, text_encoder=text_encoder)
    if images is not None:
        found = build_index(predictor, images, progress=not as_json)
        if index is not None:
            save_index(found, index, predictor)
    elif is_index(index):
        found = load_index(index, predictor)
    elif index.is_dir():
        found = build_index(predictor, index, progress=not as_json)
    else:
        raise OmnivisError(f"{index}: no such index or image folder")
    results = []
    for query in queries:
        hits = predictor.search(query, found.vectors, top_k)
        results.append({"query": query, "results": [{"image": str(found.paths[r]), "score": s} for r, s in hits]})
    if out is not None:
        from omnivis.metrics.retrieval_plot import plot_queries

        plot_queries(results, out)
    if as_json:
        print_json({"images": len(found.paths), "index": str(index) if index else None, "searches": results})
        return
    for result in results:
        table = Table("rank", "image", "score", title=f'"{result["query"]}" in {len(found.paths)} images')
        for rank, hit in enumerate(result["results"], 1):
            table.add_row(str(rank), hit["image"], f"{hit['score']:.3f}")
        console.print(table)
    if images is not None and index is not None:
        console.print(f"index of {len(found.paths)} images saved in [bold]{index}[/]")
    if out is not None:
        console.print(f"picture: [bold]{out}[/]")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("zeroshot")(zeroshot_command)
    app.command("search")(search_command)
