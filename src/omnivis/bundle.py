"""Bundles: the one on-disk format of a trained model.

A bundle is a folder: ``model.safetensors`` (weights, never pickled), ``config.json`` (task, backbone,
classes, input size, mean/std, the resolved task config, omnivis version), ``metrics.json`` and a
short ``README.md`` model card. Preprocessing travels with the weights, so predict, eval, serve,
export and ``--init-from`` all need nothing but the folder. Every file is written to a temporary
name and moved into place, so a kill never leaves a half-written bundle file where a good one stood.

``config.json`` is one flat JSON object, read and written only through :class:`BundleHeader`: the
fields every bundle shares (task, backbone, input, classes, data, version ...) under their own
names, and each task's own keys (``arch``, ``category_ids``, ``net``, ``train_config`` ...) next to
them at the top level, kept in ``BundleHeader.task_fields``. This module imports only torch and
safetensors, so ``models/`` may read bundles through it.
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from omnivis import __version__
from omnivis.errors import BundleError
from omnivis.fileio import atomic_write_bytes

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
CARD = "README.md"
REQUIRED_CONFIG_KEYS = ("task", "omnivis_version")

BUNDLE_FORMAT = 1
"""The layout of config.json. Raise it when a change would make an older omnivis misread a bundle
(a field renamed or given a new meaning); a new optional field does not need it. Bundles written
before the header existed carry no ``format`` and are format 1."""

DEFAULT_BACKBONE_PREFIX = "backbone.model."
"""Where a task model keeps the timm model: its backbone under the attribute ``backbone``, whose
timm model is ``.model`` (see ``models/backbones.py``). Stripping it gives timm's own keys."""

@dataclass(kw_only=True)
class BundleHeader:
    """The typed config.json of a bundle: the fields every bundle shares plus the task's own keys.

    On disk it is one flat JSON object (:meth:`to_dict`): the shared fields at the top level under
    these names (a field that is None is left out), then ``task_fields`` at the same level.

    Attributes:
        task: the task that wrote the bundle (``classify``, ``pretrain``, ``generate`` ...).
        backbone: the timm backbone name; None for bundles without one (generators).
        backbone_prefix: the key prefix of the backbone's timm weights in ``model.safetensors``
            (``backbone.model.``); None when the bundle holds no backbone. Left None with a
            backbone, it is :data:`DEFAULT_BACKBONE_PREFIX`.
        in_chans: input channels (1 grayscale, 3 RGB).
        img_size: the square input size in pixels.
        mean, std: per-channel normalization of [0, 1] pixels.
        classes: class names, in the order of the model's outputs.
        method: the pretraining or generative method (``simclr``, ``mae``, ``ddpm``, ``vqvae`` ...).
        data: the training data as given (a folder, a file or ``builtin:NAME``).
        split: how the training data was split (seeds, fractions, sizes).
        init_from: the bundle or weights file the backbone started from.
        omnivis_version: the omnivis that wrote the bundle.
        format: the config.json layout (:data:`BUNDLE_FORMAT`).
        task_fields: the task's own keys (``arch``, ``category_ids``, ``net``, ``sampling``,
            ``train_config`` ...), JSON values; none may be a header field's name.
    """

    task: str
    backbone: str | None = None
    backbone_prefix: str | None = None
    in_chans: int | None = None
    img_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    classes: list | None = None
    method: str | None = None
    data: str | None = None
    split: dict | None = None
    init_from: str | None = None
    omnivis_version: str = __version__
    format: int = BUNDLE_FORMAT
    task_fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"bundle header field 'task' must be a non-empty string, got {self.task!r}")
        for name in ("backbone", "backbone_prefix", "method", "data", "init_from"):
            setattr(self, name, _as_text(name, getattr(self, name)))
        for name in ("in_chans", "img_size"):
            setattr(self, name, _as_int(name, getattr(self, name)))
        for name in ("mean", "std"):
            value = _as_list(name, getattr(self, name))
            if value is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise ValueError(f"bundle header field '{name}' must be a list of numbers, got {value!r}")
            setattr(self, name, None if value is None else [float(v) for v in value])
        if self.backbone is None:
            self.backbone_prefix = None
        elif self.backbone_prefix is None:
            self.backbone_prefix = DEFAULT_BACKBONE_PREFIX
        self.classes = _as_list("classes", self.classes)
        if self.split is not None and not isinstance(self.split, Mapping):
            raise ValueError(f"bundle header field 'split' must be an object, got {self.split!r}")
        self.split = None if self.split is None else dict(self.split)
        self.omnivis_version = _as_text("omnivis_version", self.omnivis_version)
        self.format = _as_int("format", self.format)
        if self.omnivis_version is None or self.format is None:
            raise ValueError("bundle header fields 'omnivis_version' and 'format' must be set")
        if not isinstance(self.task_fields, Mapping) or not all(isinstance(k, str) for k in self.task_fields):
            raise ValueError(f"task_fields must be an object with string keys, got {self.task_fields!r}")
        self.task_fields = dict(self.task_fields)
        shadowed = sorted(set(self.task_fields) & set(_HEADER_KEYS))
        if shadowed:
            raise ValueError(f"task_fields may not hold header fields ({', '.join(shadowed)})")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> BundleHeader:
        """The header of a flat config dict: known keys become fields, every other key a task field.

        A dict without ``format`` is format 1; a bundle that does not record ``backbone_prefix`` has
        its backbone at :data:`DEFAULT_BACKBONE_PREFIX` (every task model keeps it there), except
        old generator bundles, which wrote their method's name under ``backbone``: they get
        ``backbone=None``.

        Raises:
            ValueError: no ``task``, or a header field of the wrong type.
        """
        if "task" not in config:
            raise ValueError("a bundle config needs a 'task'")
        shared = {k: config[k] for k in _HEADER_KEYS if k in config}
        task_fields = {k: v for k, v in config.items() if k not in _HEADER_KEYS}
        if "backbone_prefix" not in shared and shared.get("backbone") is not None and shared.get("backbone") == shared.get("method"):
            shared.pop("backbone")  # not a backbone name: old generator bundles wrote their method there
        return cls(**shared, task_fields=task_fields)

    def to_dict(self) -> dict[str, Any]:
        """The flat config.json object: the header fields that are set, then the task's own keys."""
        out = {k: getattr(self, k) for k in _HEADER_KEYS if getattr(self, k) is not None}
        return {**out, **self.task_fields}


def check_readable(omnivis_version: Any, format: Any, source: str | Path) -> None:
    """Refuse a bundle this omnivis cannot read: one written by a newer omnivis, or of a format
    other than 1..:data:`BUNDLE_FORMAT`. An older bundle is read (its missing fields are None).

    Raises:
        BundleError: one line naming ``source`` and both versions.
    """
    if not isinstance(format, int) or isinstance(format, bool) or not 1 <= format <= BUNDLE_FORMAT:
        raise BundleError(
            f"{source}: bundle format {format!r} (written by omnivis {omnivis_version}) is unknown to omnivis "
            f"{__version__}, which reads formats 1-{BUNDLE_FORMAT}; upgrade omnivis"
        )
    if _release(omnivis_version, source) > _release(__version__, source):
        raise BundleError(
            f"{source}: written by omnivis {omnivis_version}, newer than this omnivis {__version__}; "
            "upgrade omnivis to load it"
        )


_HEADER_KEYS = tuple(f.name for f in fields(BundleHeader) if f.name != "task_fields")


def _as_text(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValueError(f"bundle header field '{name}' must be a string, got {value!r}")


def _as_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"bundle header field '{name}' must be an integer, got {value!r}") from None


def _as_list(name: str, value: Any) -> list | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"bundle header field '{name}' must be a list, got {value!r}")
    return list(value)


def _release(version: Any, source: str | Path) -> tuple[int, ...]:
    """``"0.10.2rc1"`` -> ``(0, 10, 2)``: the release numbers, trailing zeros dropped, so 0.1 == 0.1.0."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", version.strip()) if isinstance(version, str) else None
    if match is None:
        raise BundleError(f"{source}: omnivis_version {version!r} is not a version number")
    numbers = [int(n) for n in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


@dataclass
class Bundle:
    """A loaded bundle: its folder, header, weights and metrics.

    ``config`` is the header as the flat config.json dict (what the tasks read their own keys from).
    """

    path: Path
    header: BundleHeader
    state_dict: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.header.task

    @property
    def config(self) -> dict[str, Any]:
        return self.header.to_dict()

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone's weights under timm's own keys (the header's ``backbone_prefix`` stripped).

        Raises:
            BundleError: the bundle records no backbone, or holds no weights under its prefix.
        """
        prefix = self.header.backbone_prefix
        if self.header.backbone is None or prefix is None:
            raise BundleError(f"{self.path}: this '{self.task}' bundle holds no backbone")
        state = {k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)}
        if not state:
            raise BundleError(f"{self.path}: this bundle holds no backbone weights (no '{prefix}*' keys)")
        return state


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_bundle(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: BundleHeader | Mapping[str, Any],
    metrics: dict | None = None,
    card: str | None = None,
) -> Path:
    """Write a bundle folder and return its path.

    Args:
        state_dict: the whole model's weights (tensors are made contiguous and moved to CPU).
        config: the header, or a flat config dict (read by ``BundleHeader.from_dict``: it must hold
            ``task``); ``omnivis_version`` and ``format`` are set to this omnivis's.
        metrics: evaluation numbers (JSON-serializable).
        card: the model card text; a plain one is generated from the config when None.

    Raises:
        ValueError: a config without ``task`` or with a header field of the wrong type.
    """
    header = config if isinstance(config, BundleHeader) else BundleHeader.from_dict(config)
    config = replace(header, omnivis_version=__version__, format=BUNDLE_FORMAT).to_dict()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(directory / WEIGHTS, save(tensors, metadata={"task": config["task"]}))
    _write_text(directory / CONFIG, json.dumps(config, indent=2, default=str) + "\n")
    _write_text(directory / METRICS, json.dumps(metrics or {}, indent=2, default=float) + "\n")
    _write_text(directory / CARD, card if card is not None else model_card(config, metrics or {}))
    return directory


def load_bundle(directory: str | Path, task: str | None = None) -> Bundle:
    """Read a bundle; a missing, truncated, pickled or wrong-task bundle is a ``BundleError``.

    Args:
        task: when given, the bundle must be of this task.
    """
    directory = Path(directory)
    if directory.is_file():
        if directory.suffix.lower() in {".pt", ".pth", ".ckpt", ".bin", ".pkl"}:
            raise BundleError(
                f"{directory}: refusing to unpickle a '{directory.suffix}' file; an omnivis bundle is a folder "
                f"with {WEIGHTS} and {CONFIG} (Lightning .ckpt files are only for --resume)"
            )
        raise BundleError(f"{directory}: expected a bundle folder (with {WEIGHTS} and {CONFIG}), got a file")
    if not directory.is_dir():
        raise BundleError(f"{directory}: bundle folder not found")
    header = read_header(directory)
    if task is not None and header.task != task:
        raise BundleError(f"{directory}: is a '{header.task}' bundle, but a '{task}' bundle is needed here")
    weights = directory / WEIGHTS
    if not weights.exists():
        raise BundleError(f"{weights}: missing")
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BundleError(f"{weights}: truncated or not a safetensors file ({err})") from None
    metrics_path = directory / METRICS
    metrics = {}
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BundleError(f"{metrics_path}: not valid JSON ({err})") from None
    return Bundle(path=directory, header=header, state_dict=state_dict, metrics=metrics)


def is_bundle(directory: str | Path) -> bool:
    """Whether a folder is meant as an omnivis bundle: its config.json is not a timm/Hugging Face
    model config (one that names an ``architecture`` and no ``omnivis_version``). An unreadable
    config.json counts as a bundle, so that :func:`load_bundle` names the problem."""
    config_path = Path(directory) / CONFIG
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return not isinstance(config, dict) or "omnivis_version" in config or "architecture" not in config


def read_header(directory: str | Path) -> BundleHeader:
    """Read and check a bundle folder's config.json (its weights are not read).

    Raises:
        BundleError: config.json missing, not JSON, not a bundle config, with a wrongly typed field, of
            an unknown format or written by a newer omnivis; one line naming the file.
    """
    directory = Path(directory)
    config_path = directory / CONFIG
    if not config_path.exists():
        raise BundleError(f"{config_path}: missing; is {directory} an omnivis bundle?")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{config_path}: not an omnivis bundle config (not a JSON object)")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise BundleError(f"{config_path}: not an omnivis bundle config (missing {', '.join(missing)})")
    check_readable(config["omnivis_version"], config.get("format", 1), config_path)  # before reading any field
    try:
        return BundleHeader.from_dict(config)
    except ValueError as err:
        raise BundleError(f"{config_path}: {err}") from None


def load_bundle_weights(model: torch.nn.Module, bundle: Bundle) -> None:
    """Load ``bundle``'s weights into the model rebuilt from its config.

    A mismatch (an edited config, weights from another architecture) is one ``BundleError`` line
    naming the bundle, not PyTorch's key dump.
    """
    try:
        model.load_state_dict(bundle.state_dict)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise BundleError(f"{bundle.path}: weights do not match its config ({first})") from None


def update_task_fields(directory: str | Path, fields: Mapping[str, Any]) -> None:
    """Set task keys of a bundle's config.json (e.g. a face model's calibrated threshold), atomically;
    the weights are untouched, so anything keyed by them (a face index) stays valid."""
    header = read_header(directory)
    header.task_fields.update(fields)
    _write_text(Path(directory) / CONFIG, json.dumps(header.to_dict(), indent=2, default=str) + "\n")


def update_metrics(directory: str | Path, metrics: dict) -> None:
    """Merge new evaluation numbers into a bundle's ``metrics.json``."""
    directory = Path(directory)
    path = directory / METRICS
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    current.update(metrics)
    _write_text(path, json.dumps(current, indent=2, default=float) + "\n")


DEFAULT_USAGE = ("omnivis predict THIS_FOLDER image.png", "omnivis eval THIS_FOLDER --data DIR_OR_builtin:NAME")


def model_card(config: dict, metrics: dict, usage: tuple[str, ...] = DEFAULT_USAGE) -> str:
    """A short README: what the model is, how it was made, how to use it (``usage``: the commands)."""
    lines = [
        f"# omnivis {config['task']} model",
        "",
        f"- method: `{config['method']}`" if config.get("backbone") is None and config.get("method")
        else f"- backbone: `{config.get('backbone', '?')}`",
        f"- input: {config.get('in_chans', '?')} channels, {config.get('img_size', '?')} px, "
        f"mean {config.get('mean')}, std {config.get('std')}",
    ]
    if config.get("classes"):
        classes = config["classes"]
        shown = ", ".join(map(str, classes[:20])) + (" ..." if len(classes) > 20 else "")
        lines.append(f"- classes ({len(classes)}): {shown}")
    if config.get("data"):
        lines.append(f"- trained on: `{config['data']}`")
    if config.get("init_from"):
        lines.append(f"- initialized from: `{config['init_from']}`")
    lines.append(f"- omnivis version: {config.get('omnivis_version', __version__)}")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if scalars:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalars.items()]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        *usage,
        "```",
        "",
        "Weights are in `model.safetensors`; `config.json` holds everything needed to rebuild the model.",
        "",
    ]
    return "\n".join(lines)
