"""How the ``omnivis`` command prints what is not a result: omnivis' warnings as one line each.

Python prints a warning as ``path/to/module.py:436: UserWarning: MESSAGE`` followed by the source
line that raised it, which tells a user of the command nothing. :func:`format_warnings_one_line`
makes omnivis' own warnings print as ``warning: MESSAGE``; warnings of other libraries (torch,
Lightning) keep Python's format, since their source line is what a bug report needs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from omnivis.errors import OmnivisWarning

_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


def is_omnivis_warning(category: type[Warning], filename: str) -> bool:
    """An :class:`~omnivis.errors.OmnivisWarning`, or any warning raised from omnivis' own code."""
    if issubclass(category, OmnivisWarning):
        return True
    try:
        return str(Path(filename).resolve()).startswith(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def one_line(message: Warning | str) -> str:
    """``warning: MESSAGE`` on one line (line breaks in the message become spaces), with a newline."""
    return "warning: " + " ".join(str(message).splitlines()) + "\n"


def format_warnings_one_line() -> None:
    """Print omnivis' warnings as ``warning: MESSAGE``, one line, without Python's source line.

    Installs a ``warnings.formatwarning`` that formats omnivis' warnings with :func:`one_line` and
    hands every other warning to the formatter that was installed before. Call it once at the
    start of the command line's ``main``; calling it again changes nothing. Which warnings are
    shown (filters) is untouched.
    """
    previous = warnings.formatwarning
    if getattr(previous, "_omnivis_one_line", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):  # warnings.formatwarning's signature
        if is_omnivis_warning(category, filename):
            return one_line(message)
        return previous(message, category, filename, lineno, line)

    formatwarning._omnivis_one_line = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning
