"""``evaluate_generator``: FID/KID against held-out images, class accuracy, sample grids, HTML report."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.progress import track

from omnivis.data.builtin import resolve_classification_data
from omnivis.data.datasets import ImageClassificationDataset
from omnivis.data.readers import ClassificationData
from omnivis.data.splits import split_indices
from omnivis.data.transforms import generator_transform
from omnivis.errors import ConfigError, DataError
from omnivis.inference.classify import ClassifyPredictor
from omnivis.metrics.generation import ClassifierFeatures, InceptionFeatures, fid_kid
from omnivis.metrics.report import ReportSection, write_html_report, write_json
from omnivis.tasks.generate.sample import (
    GeneratorPredictor,
    image_grid,
    to_pil,
    to_uint8,
)

MAX_EVAL_SAMPLES = 1000


def console_status(message: str, show: bool):
    """A spinner while a step without its own progress runs (a no-op context when ``show`` is False)."""
    return Console(stderr=True).status(message) if show else contextlib.nullcontext()


def load_reference(path: str | Path) -> tuple[ClassifierFeatures, list[str]]:
    """A classifier bundle -> its feature extractor (for FID/KID) and its classes."""
    clf = ClassifyPredictor.from_dir(path)
    cfg = clf.bundle.config
    return ClassifierFeatures(clf.model, int(cfg["img_size"]), int(cfg["in_chans"]), cfg["mean"], cfg["std"]), clf.classes


def class_accuracy(gen: GeneratorPredictor, features: ClassifierFeatures, per_class: int, seed: int = 0,
                   guidance: float | None = None, steps: int | None = None, progress: bool = False) -> dict[str, float]:
    """The reference's accuracy on ``per_class`` samples of each requested class (class k: seed + 1 + k)."""
    classes = list(enumerate(gen.classes))
    if progress:
        classes = track(classes, description=f"class accuracy ({per_class} samples per class)", transient=True)
    per = {}
    for k, name in classes:
        x = (gen.generate_tensor(per_class, class_=name, guidance=guidance, steps=steps, seed=seed + 1 + k) + 1) / 2
        per[name] = int((features.logits(x).argmax(1) == k).sum()) / per_class
    return per


def _wanted_split(loaded, spec: str, cfg: dict, split: str):
    """``loaded`` (class or caption data), or its held-out part when ``split`` asks for it (as training
    drew it: ``split_indices`` over the labels with the bundle's seed)."""
    if split not in ("auto", "val", "all"):
        raise ConfigError(f"split must be auto, val or all, got '{split}'")
    if split == "val" or (split == "auto" and spec == cfg.get("data")):
        _, val_idx = split_indices(loaded.labels(), cfg["split"]["val_fraction"], seed=cfg["split"]["seed"])
        if not len(val_idx):
            raise DataError(f"{spec}: the bundle was trained without a held-out split; use split='all'")
        return loaded.subset(val_idx)
    return loaded


def _real_images(gen: GeneratorPredictor, data, split: str, strict: bool, limit: int) -> tuple[torch.Tensor, str]:
    cfg = gen.config
    if not isinstance(data, ClassificationData):
        spec = data or cfg["data"]
        data = _wanted_split(resolve_classification_data(spec, strict=strict), spec, cfg, split)
    if len(data) < 2:
        raise DataError(f"{data.source}: FID needs at least 2 real images, found {len(data)}")
    mode = "RGB" if gen.channels == 3 else "L"
    ds = ImageClassificationDataset(data, generator_transform(gen.img_size), mode)
    images = torch.stack([ds[i][0] for i in range(min(len(ds), limit))])
    return (images + 1) / 2, data.source


def _held_out_captions(gen: GeneratorPredictor, data, split: str, strict: bool,
                       limit: int) -> tuple[torch.Tensor, list[str], str]:
    """A text bundle's real images in [0, 1] and their first captions (the prompts to sample with)."""
    from omnivis.data.captions import resolve_caption_data

    cfg = gen.config
    if data is None or isinstance(data, (str, Path)):
        spec = str(data or cfg["data"])
        data = _wanted_split(resolve_caption_data(spec, strict=strict, seed=cfg["split"]["seed"]), spec, cfg, split)
    if not all(getattr(s, "captions", None) for s in data.samples):
        raise DataError(f"{data.source}: a text-conditioned generator is evaluated on captioned images "
                        "(a caption CSV, COCO captions JSON, class folder or builtin:shapes)")
    if len(data) < 2:
        raise DataError(f"{data.source}: FID needs at least 2 real images, found {len(data)}")
    mode = "RGB" if gen.channels == 3 else "L"
    ds = ImageClassificationDataset(data, generator_transform(gen.img_size), mode)
    count = min(len(ds), limit)
    images = torch.stack([ds[i][0] for i in range(count)])
    return (images + 1) / 2, [data.samples[i].captions[0] for i in range(count)], data.source


def evaluate_generator(
    bundle_dir: str | Path,
    data: str | ClassificationData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    reference: str | Path | None = None,
    num_samples: int = 500,
    per_class: int = 50,
    seed: int = 0,
    inception_weights: str | Path | None = None,
) -> dict:
    """FID/KID of ``num_samples`` generated images against real held-out images, in the feature
    space of ``reference`` (a classify bundle; default: the one recorded at training), plus, for a
    conditional model, the reference's accuracy on ``per_class`` samples of each class. A
    text-conditioned model draws one image per real image, prompted with its first caption (class
    accuracy is left out: its prompts are not the reference's classes).

    With ``inception_weights`` (a .safetensors file of the FID Inception-v3), also the standard
    ``inception_fid`` / ``inception_kid_*`` of the same images (slow on a CPU: ~0.3 s per image).

    Writes ``samples.png``, ``eval_report.html`` and ``eval.json`` into ``out_dir`` when given.
    """
    gen = GeneratorPredictor.from_dir(bundle_dir)
    reference = reference or gen.config.get("reference")
    if not reference:
        like = "FOLDER_OF_CLASS_FOLDERS" if gen.text else gen.config["data"]
        raise ConfigError(
            f"{bundle_dir}: no reference classifier to measure FID with; train one (omnivis train classify --data "
            f"{like} --out REF) and pass --reference REF when training the generator"
        )
    features, ref_classes = load_reference(reference)
    inception = InceptionFeatures(inception_weights) if inception_weights else None  # fail before sampling
    limit = min(num_samples, MAX_EVAL_SAMPLES)
    if gen.text:
        real, prompts, source = _held_out_captions(gen, data, split, strict, limit)
    else:
        (real, source), prompts = _real_images(gen, data, split, strict, limit), None
    n = len(real)
    with console_status(f"sampling {n} images", progress):
        fake = (gen.generate_tensor(n, seed=seed, prompt=prompts) + 1) / 2
    metrics: dict = {"method": gen.method, "data": source, "reference": str(reference), "num_real": n,
                     "num_generated": n, **fid_kid(real, fake, features)}
    if inception is not None:
        scores = fid_kid(real, fake, inception, progress="Inception features" if progress else None)
        metrics.update({f"inception_{k}": v for k, v in scores.items()}, inception_weights=str(inception_weights))
    metrics["sampler"] = gen.config.get("sampling", {})
    if gen.text:
        metrics["note"] = ("text-conditioned: each generated image is prompted with a held-out image's first "
                           "caption; class accuracy is for class-conditional generators")
    if gen.conditional:
        if ref_classes != gen.classes:
            raise ConfigError(f"{reference}: its classes differ from the generator's; use a classifier of the same data")
        per = class_accuracy(gen, features, per_class, seed, progress=progress)
        metrics["class_accuracy"] = sum(per.values()) / len(per)
        metrics["per_class_accuracy"] = per
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        grid = to_pil(image_grid(to_uint8(fake[:64] * 2 - 1)))
        grid = grid.resize((grid.width * 4, grid.height * 4), Image.Resampling.NEAREST)
        metrics["samples_png"] = str(out_dir / "samples.png")
        grid.save(metrics["samples_png"])
        real_grid = to_pil(image_grid(to_uint8(real[:64] * 2 - 1)))
        sections = [
            ReportSection("Scores", text=f"FID/KID in the feature space of the classifier {reference} "
                          f"({n} generated vs {n} real images from {source}).",
                          table={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}),
            ReportSection("Samples", images=[("generated", grid), ("real", real_grid.resize(grid.size, Image.Resampling.NEAREST))]),
        ]
        if gen.conditional:
            sections.append(ReportSection("Class accuracy of the reference on generated samples",
                                          rows=[{"class": c, "accuracy": a} for c, a in metrics["per_class_accuracy"].items()]))
        curves = Path(bundle_dir) / "training_curves.png"
        if curves.exists():
            sections.append(ReportSection("Training curves", images=[("training curves", curves)]))
        metrics["report_html"] = str(write_html_report(out_dir / "eval_report.html", f"{gen.method} generator", sections))
        write_json(metrics, out_dir / "eval.json")
    return metrics
