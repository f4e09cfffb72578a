"""What a reader left out: every skipped input kept with its reason, and one warning line per source.

Every data object (``ClassificationData``, ``SegmentationData``, ``DetectionData``,
``MultitaskData``) has ``skipped: list[tuple[str, str]]``: one ``(name, reason)`` per input left
out, where the name is a file (relative to the dataset root, as the reader names its samples) or a
record (``ann.json annotation id 17``, ``labels.csv line 4``). ``subset`` and concatenation carry
it, so a training run can write all of them to ``skipped.json`` (:func:`skipped_records`) however
short the warning is. :func:`warn_skipped` is the one warning every reader gives for them.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from omnivis.errors import SkippedInputWarning

Skipped = list[tuple[str, str]]
"""``(file or record name, reason)`` for every input a reader left out."""

SHOWN = 3
"""How many skipped inputs a warning names; the data object keeps all of them."""

_DATA_DIRS = tuple({os.path.dirname(os.path.abspath(__file__)) + os.sep, str(Path(__file__).resolve().parent) + os.sep})


def skipped_records(skipped: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """``[{"path": name, "reason": reason}, ...]``, in order: what ``skipped.json`` of a run holds."""
    return [{"path": str(name), "reason": str(reason)} for name, reason in skipped]


def skipped_message(skipped: Sequence[tuple[str, str]], what: str, where: str | Path) -> str:
    """The one line :func:`warn_skipped` gives, e.g. ``data/ann.json: skipped 6 bad records: ann.json
    annotation id 17 (image 'a.jpg': box has negative width); ...; and 3 more; a training run lists
    every one in skipped.json``."""
    count = len(skipped)
    shown = "; ".join(f"{name} ({reason})" for name, reason in skipped[:SHOWN])
    more = f"; and {count - SHOWN} more" if count > SHOWN else ""
    noun = what if count == 1 else f"{what}s"
    return f"{where}: skipped {count} {noun}: {shown}{more}; a training run lists every one in skipped.json"


def _outside_data_layer() -> int:
    """The ``stacklevel`` that attributes a warning to the first caller outside ``omnivis.data``."""
    level, frame = 1, sys._getframe(1)  # stacklevel 1: the function that calls warnings.warn
    while frame is not None and frame.f_code.co_filename.startswith(_DATA_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def warn_skipped(skipped: Sequence[tuple[str, str]], what: str, where: str | Path) -> None:
    """One :class:`~omnivis.errors.SkippedInputWarning` for everything one source left out.

    The message names the first :data:`SHOWN` inputs with their reasons and the count (see
    :func:`skipped_message`); nothing is warned when ``skipped`` is empty. The warning points at the
    code that called into ``omnivis.data`` (a task, or the user's script), not at a reader.

    Args:
        skipped: ``(name, reason)`` pairs, as the data objects keep them.
        what: what each one is, singular (``"unreadable image"``, ``"bad record"``, ``"bad row"``).
        where: the folder or file they come from.
    """
    if skipped:
        warnings.warn(skipped_message(skipped, what, where), SkippedInputWarning, stacklevel=_outside_data_layer())
