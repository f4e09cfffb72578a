"""Bundles: the one on-disk format of a trained model.

A bundle is a folder: ``model.safetensors`` (weights, never pickled), ``config.json`` (task, backbone,
classes, input size, mean/std, the resolved task config, omnivis version), ``metrics.json`` and a
short ``README.md`` model card. Preprocessing travels with the weights, so predict, eval, serve,
export and ``--init-from`` all need nothing but the folder. Every file is written to a temporary
name and moved into place, so a kill never leaves a half-written bundle file where a good one stood.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Bundle:
    """A loaded bundle: its folder, config, weights and metrics."""

    path: Path
    config: dict
    state_dict: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.config["task"]


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_bundle(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    metrics: dict | None = None,
    card: str | None = None,
) -> Path:
    """Write a bundle folder and return its path.

    Args:
        state_dict: the whole model's weights (tensors are made contiguous and moved to CPU).
        config: must hold ``task``; ``omnivis_version`` is added.
        metrics: evaluation numbers (JSON-serializable).
        card: the model card text; a plain one is generated from the config when None.
    """
    if "task" not in config:
        raise ValueError("a bundle config needs a 'task'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**config, "omnivis_version": __version__}
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
    config_path = directory / CONFIG
    if not config_path.exists():
        raise BundleError(f"{config_path}: missing; is {directory} an omnivis bundle?")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{config_path}: not valid JSON ({err})") from None
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise BundleError(f"{config_path}: not an omnivis bundle config (missing {', '.join(missing)})")
    if task is not None and config["task"] != task:
        raise BundleError(f"{directory}: is a '{config['task']}' bundle, but a '{task}' bundle is needed here")
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
    return Bundle(path=directory, config=config, state_dict=state_dict, metrics=metrics)


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


def update_metrics(directory: str | Path, metrics: dict) -> None:
    """Merge new evaluation numbers into a bundle's ``metrics.json``."""
    directory = Path(directory)
    path = directory / METRICS
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    current.update(metrics)
    _write_text(path, json.dumps(current, indent=2, default=float) + "\n")


def model_card(config: dict, metrics: dict) -> str:
    """A short README: what the model is, how it was made, how to use it."""
    lines = [
        f"# omnivis {config['task']} model",
        "",
        f"- backbone: `{config.get('backbone', '?')}`",
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
        "omnivis predict THIS_FOLDER image.png",
        "omnivis eval THIS_FOLDER --data DIR_OR_builtin:NAME",
        "```",
        "",
        "Weights are in `model.safetensors`; `config.json` holds everything needed to rebuild the model.",
        "",
    ]
    return "\n".join(lines)
