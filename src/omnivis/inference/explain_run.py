"""``omnivis explain`` as a function: images in, maps, overlays, numbers and the sanity check out.

Per image and target it reports the target, its score, the map's peak in the *input image's* pixels,
and the share of the map's mass in its top 10% of pixels; with ``sanity`` also the Spearman rank
correlation between the trained model's map and the map of the same model with its top re-initialized
(Adebayo et al. 2018: a map that barely changes explains the architecture, not the training).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import torch
from PIL import Image

from omnivis.data.images import load_images
from omnivis.fileio import atomic_write_bytes
from omnivis.inference.base import image_names
from omnivis.inference.explain import Explainer, find_backbone, peak, randomized_copy, spearman, top_mass_share
from omnivis.inference.explain_tasks import ExplainAdapter, Job, image_point, map_on_image

SANITY_THRESHOLD = 0.5  # Spearman below this: the map depends on the trained weights


def explain_images(
    adapter: ExplainAdapter,
    images: Sequence,
    method: str = "gradcam",
    layer: str | None = None,
    target: str | None = None,
    top_k: int = 3,
    sanity: bool = False,
    out_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict:
    """Maps for ``images`` (paths, PIL images or arrays) with one method at one layer.

    Returns:
        ``{"method", "layer", "results": [{"image", "size", "explanations": [{"target", "kind", "score",
        "peak": [x, y] (image pixels), "top10_mass", "overlay" (with out_dir), "sanity_spearman"
        (with sanity), ...}]}], "sanity": {...} (with sanity)}``; ``maps`` holds the (S, S) arrays in
        job order (not JSON).
    """
    explainer = Explainer(adapter.model, find_backbone(adapter.model), adapter.img_size, method, layer)
    randomized = None
    if sanity:
        copy = randomized_copy(adapter.model, explainer.layer.name if explainer.layer else None)
        randomized = Explainer(copy, find_backbone(copy), adapter.img_size, method,
                               explainer.layer.name if explainer.layer else None)
    names = image_names(images, names)
    out = Path(out_dir) if out_dir is not None else None
    results, maps, correlations = [], [], []
    chunks = range(0, len(images), batch_size)
    if progress:
        from rich.progress import track

        chunks = track(chunks, description=f"explaining ({method})", total=len(chunks), transient=True)
    try:
        for start in chunks:
            pil = load_images(images[start:start + batch_size], adapter.mode)
            batch = adapter.prepare(pil)
            jobs = adapter.jobs(batch, target, top_k)
            cams = _job_maps(explainer, batch, jobs, batch_size)
            random_cams = _job_maps(randomized, batch, jobs, batch_size) if randomized is not None else None
            rows: dict[int, list[dict]] = {}
            for j, (job, cam) in enumerate(zip(jobs, cams)):
                image, name = pil[job.image], names[start + job.image]
                row = _describe(job, cam, (image.width, image.height), adapter)
                if random_cams is not None:
                    rho = spearman(cam, random_cams[j])
                    row["sanity_spearman"] = None if rho is None else round(rho, 4)
                    correlations.append(rho)
                if out is not None:
                    picture = f"{start + job.image:04d}_{_safe(name)}_{_safe(job.label)}_{_safe(method)}.png"
                    row["overlay"] = str(write_overlay(image, cam, adapter.geometry, out / picture))
                rows.setdefault(job.image, []).append(row)
                maps.append(cam)
            for i, image in enumerate(pil):
                results.append({"image": names[start + i], "size": [image.width, image.height],
                                "explanations": rows.get(i, [])})
    finally:  # grad-cam's hooks leave the model with the call, not when its object is collected
        explainer.close()
        if randomized is not None:
            randomized.close()
    report = {"method": method, "layer": explainer.layer_name, "geometry": adapter.geometry, "results": results,
              "maps": maps}
    if sanity:
        report["sanity"] = sanity_summary(correlations)
    return report


def _job_maps(explainer: Explainer | None, batch: torch.Tensor, jobs: list[Job], batch_size: int) -> list[np.ndarray]:
    cams: list[np.ndarray] = []
    for start in range(0, len(jobs), batch_size):
        part = jobs[start:start + batch_size]
        inputs = batch[[job.image for job in part]]
        targets = [job.target for job in part]  # eigencam and rollout ignore them
        cams.extend(explainer.maps(inputs, targets))
    return cams


def _describe(job: Job, cam: np.ndarray, size: tuple[int, int], adapter: ExplainAdapter) -> dict:
    x, y = peak(cam)
    px, py = image_point(x, y, size, adapter.img_size, adapter.geometry)
    width, height = size
    row = {"target": job.label, "kind": job.kind, "score": round(job.score, 6),
           "peak": [int(round(min(max(px, 0), width - 1))), int(round(min(max(py, 0), height - 1)))],
           "top10_mass": round(top_mass_share(cam), 4)}
    row.update({k: round(v, 6) if isinstance(v, float) else v for k, v in job.extra.items()})
    if "box_input" in row:  # a detector's box, from the S x S input back to the image (squash geometry)
        sx, sy = width / adapter.img_size, height / adapter.img_size
        x0, y0, x1, y1 = row.pop("box_input")
        row["box"] = [round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2), round(y1 * sy, 2)]
    return row


def sanity_summary(correlations: list[float | None]) -> dict:
    """Mean Spearman of the model-randomization test and whether the maps passed it (< 0.5)."""
    scored = [c for c in correlations if c is not None]
    mean = float(np.mean(scored)) if scored else None
    return {"test": "model randomization (Adebayo et al. 2018): top blocks and head re-initialized",
            "mean_spearman": None if mean is None else round(mean, 4), "maps": len(correlations),
            "constant_maps": len(correlations) - len(scored), "threshold": SANITY_THRESHOLD,
            "passed": None if mean is None else bool(mean < SANITY_THRESHOLD)}


def heat_overlay(image: Image.Image, cam: np.ndarray, geometry: str, alpha: float = 0.5) -> Image.Image:
    """The map in the jet colormap over the part of the image the model saw; the rest is dimmed."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    mapped, (x0, y0, x1, y1) = map_on_image(cam, (image.width, image.height), geometry)
    colours = matplotlib.colormaps["jet"](np.clip(mapped, 0, 1))[..., :3] * 255.0
    out = base * 0.35
    region = base[y0:y1, x0:x1]
    h, w = region.shape[:2]
    out[y0:y1, x0:x1] = (1 - alpha) * region + alpha * colours[:h, :w]
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def write_overlay(image: Image.Image, cam: np.ndarray, geometry: str, path: Path, min_side: int = 192) -> Path:
    """Write the overlay as PNG; small images are enlarged (nearest) so a 64-px map can be seen."""
    picture = heat_overlay(image, cam, geometry)
    if min(picture.size) < min_side:
        factor = -(-min_side // min(picture.size))
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def _safe(name: str) -> str:
    """A file-name-safe form of an image or class name (``digits/0001`` -> ``digits_0001``)."""
    stem = Path(str(name)).stem if Path(str(name)).suffix else str(name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_")[:80] or "image"
