"""Text search over a folder of images: embed the folder once with an align bundle, then any query.

An index folder holds ``index.safetensors`` (the (N, D) image vectors) and ``index.json`` (the image
paths relative to the indexed folder, and a fingerprint of the model that embedded them: its vector
for a fixed grey test image). A query with another model would compare vectors from two spaces, so
an index made by another bundle is refused rather than searched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from omnivis.data.images import expand_image_paths
from omnivis.errors import BundleError, DataError
from omnivis.fileio import atomic_write_bytes
from omnivis.inference.align import AlignPredictor

INDEX_VECTORS = "index.safetensors"
INDEX_META = "index.json"
SAME_MODEL_COSINE = 0.999


@dataclass
class ImageIndex:
    """Image vectors (N, D), the images' paths, and the folder they are relative to."""

    vectors: torch.Tensor
    paths: list[Path]
    root: Path


def model_fingerprint(predictor: AlignPredictor) -> list[float]:
    """The bundle's vector for a mid-grey image with a white square: identifies the model's space."""
    probe = np.full((predictor.img_size, predictor.img_size, 3), 128, dtype=np.uint8)
    quarter = max(1, predictor.img_size // 4)
    probe[quarter: 3 * quarter, quarter: 3 * quarter] = 255
    return [round(float(v), 6) for v in predictor.embed_images([probe])[0]]


def build_index(predictor: AlignPredictor, folder: str | Path, progress: bool = True) -> ImageIndex:
    """Embed every image under ``folder`` (recursively)."""
    folder = Path(folder)
    paths = expand_image_paths([folder])
    return ImageIndex(predictor.embed_images(paths, progress=progress), paths, folder)


def save_index(index: ImageIndex, out: str | Path, predictor: AlignPredictor) -> Path:
    """Write the index into the folder ``out`` (created); returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{INDEX_VECTORS}.tmp"
    save_file({"vectors": index.vectors.contiguous()}, str(tmp))
    tmp.replace(out / INDEX_VECTORS)
    meta = {"root": str(index.root.resolve()), "paths": [str(p.relative_to(index.root)) if p.is_relative_to(index.root)
                                                         else str(p) for p in index.paths],
            "bundle": str(predictor.bundle.path), "fingerprint": model_fingerprint(predictor)}
    atomic_write_bytes(out / INDEX_META, (json.dumps(meta, indent=1) + "\n").encode("utf-8"))
    return out


def is_index(folder: str | Path) -> bool:
    return (Path(folder) / INDEX_META).is_file() and (Path(folder) / INDEX_VECTORS).is_file()


def load_index(folder: str | Path, predictor: AlignPredictor) -> ImageIndex:
    """Read an index written by :func:`save_index`, after checking ``predictor`` made it.

    Raises:
        DataError: a missing, truncated or inconsistent index (naming the file).
        BundleError: the index was made by another model.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / INDEX_META).read_text(encoding="utf-8"))
        vectors = load_file(str(folder / INDEX_VECTORS))["vectors"]
    except Exception as error:  # a truncated or hand-edited index: name it and say how to rebuild
        raise DataError(f"{folder}: unreadable search index ({type(error).__name__}: {error}); rebuild it with "
                        f"--images FOLDER") from None
    if vectors.ndim != 2 or len(vectors) != len(meta.get("paths", [])):
        raise DataError(f"{folder / INDEX_VECTORS}: holds {tuple(vectors.shape)} vectors for "
                        f"{len(meta.get('paths', []))} paths; rebuild it with --images FOLDER")
    stored = torch.tensor(meta.get("fingerprint", []), dtype=torch.float32)
    now = torch.tensor(model_fingerprint(predictor))
    same = stored.shape == now.shape and float(torch.nn.functional.cosine_similarity(stored, now, dim=0))
    if not same or same < SAME_MODEL_COSINE:
        raise BundleError(f"{folder}: this index was made by {meta.get('bundle')}, not by {predictor.bundle.path}; "
                          "rebuild it with --images FOLDER")
    root = Path(meta["root"])
    return ImageIndex(vectors.float(), [root / p for p in meta["paths"]], root)
