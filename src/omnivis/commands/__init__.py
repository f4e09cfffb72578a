"""CLI commands of each task family, one module each, registered on ``omnivis.cli``'s apps.

A module here imports ``app`` / ``train_app`` / ``console`` from ``omnivis.cli`` and decorates its
commands; ``register_all`` imports every module in ``FAMILIES`` (called once at the end of cli.py).
Heavy libraries are imported inside the command functions, so ``omnivis --help`` stays fast.
"""

from __future__ import annotations

import importlib

FAMILIES: tuple[str, ...] = ("detect", "segment", "multitask", "generate")


def register_all() -> None:
    for family in FAMILIES:
        importlib.import_module(f"omnivis.commands.{family}")
