"""Using an image-text (align) bundle: zero-shot classification by text, text search over images,
and ``evaluate_align`` (recall@k both ways, zero-shot accuracy).

The text encoder is the one the bundle was trained with (recorded in its header); another one is
refused by ``models/text.py``, since the image tower only knows that encoder's embedding space.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from omnivis.bundle import Bundle
from omnivis.data.captions import CaptionData, resolve_caption_data
from omnivis.data.splits import split_indices
from omnivis.data.transforms import build_eval_transform
from omnivis.errors import ConfigError, DataError
from omnivis.inference.base import Predictor, held_out_wanted, image_names
from omnivis.models.align import AlignModel
from omnivis.models.backbones import create_backbone
from omnivis.models.text import TextEncoder, encoder_for_bundle

TASK = "align"
RECALL_AT = (1, 5, 10)
MAX_LABELS = 10_000


def parse_labels(text: str | None, file: str | Path | None = None) -> list[str]:
    """``"a,b,c"`` and/or a file with one label per line -> labels, blanks dropped, order kept.

    Raises:
        ConfigError: no labels at all, or the same label twice (its score would be split).
    """
    labels = [part.strip() for part in (text or "").split(",")]
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"{path}: labels file not found")
        labels += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    labels = [label for label in labels if label]
    if not labels:
        raise ConfigError("give the labels to choose from: --labels \"a red circle,a blue square\" or --labels-file")
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ConfigError(f"label '{label}' is given twice")
        seen.add(label)
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    return labels


class AlignPredictor(Predictor):
    """Embeds images into the text encoder's space; scores them against any texts."""

    task = TASK
    noun = "image-text model"

    def __init__(self, bundle: Bundle, device: str = "cpu", text_encoder: str | None = None) -> None:
        super().__init__(bundle, device)
        cfg = self.config
        backbone = create_backbone(cfg["backbone"], in_chans=int(cfg["in_chans"]), img_size=self.img_size)
        self.model = self.ready(AlignModel(backbone, int(cfg["text_encoder"]["dim"])))
        self.transform = build_eval_transform(self.img_size, tuple(cfg["mean"]), tuple(cfg["std"]))
        self.labels: list[str] = list(cfg.get("labels") or [])
        self._encoder_name = text_encoder
        self._encoder: TextEncoder | None = None

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu", text_encoder: str | None = None) -> AlignPredictor:
        from omnivis.bundle import load_bundle

        return cls(load_bundle(path, task=TASK), device=device, text_encoder=text_encoder)

    @property
    def text_encoder(self) -> TextEncoder:
        """The bundle's own encoder (loaded on first use), or the one given after checking it is the same."""
        if self._encoder is None:
            self._encoder = encoder_for_bundle(self.config["text_encoder"], self._encoder_name, self.bundle.path)
        return self._encoder

    @torch.no_grad()
    def embed_images(self, images: Sequence, batch_size: int = 128, progress: bool = False) -> torch.Tensor:
        """Images (paths, PIL images or arrays) -> (N, D) unit vectors."""
        out = []
        for decoded in self.batches(images, batch_size, progress, description="embedding images", tensors=True):
            batch = torch.stack([self.transform(image) for image in decoded]).to(self.device)
            out.append(self.model(batch).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, int(self.config["text_encoder"]["dim"]))

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (N, D) unit vectors of the bundle's text encoder."""
        return self.text_encoder.encode(list(texts))

    def zeroshot_proba(self, images: Sequence, labels: Sequence[str], progress: bool = False) -> torch.Tensor:
        """(N, L) probabilities over ``labels``: softmax of the trained temperature times cosine."""
        texts = self.embed_texts(labels)
        scale = float(self.model.scale().detach())
        return (scale * self.embed_images(images, progress=progress) @ texts.T).softmax(dim=1)

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> list[dict]:
        """Zero-shot top-k over ``labels`` (default: the training data's labels):
        ``[{"image", "label", "score", "top_k": [{"label", "score"}, ...]}]``."""
        labels = list(labels) if labels else self.labels
        if not labels:
            raise ConfigError(f"{self.bundle.path}: this bundle was trained without labels; give them: "
                              f"omnivis zeroshot {self.bundle.path} IMAGES --labels \"a cat,a dog\"")
        probs = self.zeroshot_proba(images, labels)
        scores, indices = probs.topk(min(top_k, len(labels)), dim=1)
        results = []
        for name, s, idx in zip(image_names(images, names), scores.tolist(), indices.tolist()):
            top = [{"label": labels[i], "score": round(p, 6)} for i, p in zip(idx, s)]
            results.append({"image": name, "label": top[0]["label"], "score": top[0]["score"], "top_k": top})
        return results

    def search(self, query: str, embeddings: torch.Tensor, top_k: int = 5) -> list[tuple[int, float]]:
        """The ``top_k`` rows of ``embeddings`` (N, D) most similar to ``query``: (row, cosine), best first."""
        scores = embeddings @ self.embed_texts([query])[0]
        values, rows = scores.topk(min(top_k, len(scores)))
        return [(int(r), round(float(v), 6)) for r, v in zip(rows, values)]


def caption_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded held-out split of ``n`` captioned images (train rows, held-out rows); training and
    evaluation both derive it from the bundle's record."""
    if val_fraction <= 0 or n < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    return split_indices(n, val_fraction, seed=seed, stratify=False)


def retrieval_recall(image_vectors: torch.Tensor, image_captions: Sequence[Sequence[str]],
                     text_vectors: torch.Tensor, captions: Sequence[str], ks: Sequence[int] = RECALL_AT) -> dict:
    """Recall@k both ways when several images may share a caption.

    Text to image: each distinct caption is a query, and a hit is any image carrying that caption in
    the top k. Image to text: each image ranks the distinct captions; a hit is any of its own.
    ``text_to_image_chance@1`` is what ranking at random scores, to read the figure against.
    """
    row = {c: i for i, c in enumerate(captions)}
    relevant = torch.zeros(len(captions), len(image_captions), dtype=torch.bool)
    for j, own in enumerate(image_captions):
        for caption in own:
            relevant[row[caption], j] = True
    sims = text_vectors @ image_vectors.T  # (T, N)
    metrics: dict = {"queries": len(captions), "gallery": len(image_captions)}
    for k in ks:
        top = sims.topk(min(k, sims.shape[1]), dim=1).indices
        metrics[f"text_to_image_recall@{k}"] = round(float(relevant.gather(1, top).any(dim=1).float().mean()), 4)
        top_t = sims.T.topk(min(k, sims.shape[0]), dim=1).indices
        metrics[f"image_to_text_recall@{k}"] = round(float(relevant.T.gather(1, top_t).any(dim=1).float().mean()), 4)
    metrics["text_to_image_chance@1"] = round(float(relevant.float().mean(dim=1).mean()), 4)
    return metrics


def evaluate_align(
    bundle_dir: str | Path,
    data: str | CaptionData | None = None,
    split: str = "auto",
    out_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    images: str | None = None,
    text_encoder: str | None = None,
) -> dict:
    """Recall@1/5/10 text->image and image->text, and zero-shot top-1 over the data's labels if it has
    any; ``retrieval.png`` (a few queries and their best images) in ``out_dir``.

    Args:
        data: a caption data spec, loaded data, or None for the data the bundle was trained on.
        split: ``val`` (the bundle's held-out images), ``all``, or ``auto``: ``val`` when ``data`` is
            the training data, else ``all``.
    """
    predictor = AlignPredictor.from_dir(bundle_dir, text_encoder=text_encoder)
    cfg = predictor.config
    if not isinstance(data, CaptionData):
        spec = data or cfg["data"]
        loaded = resolve_caption_data(spec, strict=strict, images=images or cfg.get("images"),
                                      seed=int(cfg["split"]["seed"]))
        if held_out_wanted(split, spec, cfg.get("data")):
            _, val_idx = caption_split(len(loaded), float(cfg["split"]["val_fraction"]), int(cfg["split"]["seed"]))
            if not len(val_idx):
                raise DataError(f"{spec}: the bundle was trained without held-out images; use --split all")
            loaded = loaded.subset(val_idx)
        data = loaded
    if len(data) == 0:
        raise DataError(f"{data.source}: no captioned images to evaluate")
    vectors = predictor.embed_images([s.source for s in data.samples], progress=progress)
    captions = list(dict.fromkeys(c for s in data.samples for c in s.captions))
    texts = predictor.embed_texts(captions)
    metrics = {"data": data.source, "images": len(data), **retrieval_recall(vectors, [s.captions for s in data.samples],
                                                                           texts, captions)}
    labelled = [i for i, s in enumerate(data.samples) if s.label >= 0]
    if data.classes and labelled:
        label_vectors = predictor.embed_texts(data.classes)
        guess = (vectors[labelled] @ label_vectors.T).argmax(dim=1)
        truth = torch.tensor([data.samples[i].label for i in labelled])
        metrics["zeroshot_top1"] = round(float((guess == truth).float().mean()), 4)
        metrics["zeroshot_labels"] = len(data.classes)
        metrics["zeroshot_chance"] = round(1.0 / len(data.classes), 4)
    if out_dir is not None:
        from omnivis.metrics.retrieval_plot import plot_retrieval

        path = plot_retrieval(data, vectors, captions, texts, Path(out_dir) / "retrieval.png")
        metrics["retrieval_png"] = str(path)
    return metrics
