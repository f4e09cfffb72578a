"""The ``omnivis`` commands, one module per family; ``omnivis.cli`` assembles them into the app.

Each module has a ``register(app, train_app)`` that adds its commands to the root app and to
``omnivis train``. The train, pretrain and distill commands take one option per field of their
config dataclass (:mod:`omnivis.commands.options`); ``python -m omnivis.commands.docs`` writes
those options into the docs' tables. Heavy libraries are imported inside the command functions, so
``omnivis --help`` stays fast. No command module imports ``omnivis.cli`` (only the docs generator
reads the assembled app, inside its functions).
"""

from __future__ import annotations

FAMILIES: tuple[str, ...] = (
    "train", "segment", "pretrain", "probe", "distill", "evaluate", "predict", "explain", "export", "audit", "serve",
    "generate", "multimodal", "edit", "face", "demo", "datasets", "data_pack", "models",
)
"""The command modules, in the order their commands are listed in ``omnivis --help``."""
