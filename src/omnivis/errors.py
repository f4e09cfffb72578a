"""User-facing errors.

Everything a user can get wrong (a corrupt image, a bad option, a truncated checkpoint) raises an
``OmnivisError`` whose message names the thing and the problem in one line. The CLI prints that line
and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OmnivisError(Exception):
    """A problem with the user's input, reported as one clear line."""


class ImageError(OmnivisError):
    """An image file that cannot be read, decoded or accepted (corrupt, truncated, too large)."""


class DataError(OmnivisError):
    """A dataset that cannot be used as given (missing folder, bad manifest, unknown class)."""


class ConfigError(OmnivisError):
    """An unknown or invalid configuration key or value."""


class BundleError(OmnivisError):
    """A model bundle that is missing, truncated, of the wrong kind or unsafe to load."""


class TrainingError(OmnivisError):
    """A training run that cannot go on (for example a non-finite loss)."""


class OmnivisWarning(UserWarning):
    """A warning about the user's input; the CLI prints it as one line (``omnivis.console``)."""


class SkippedInputWarning(OmnivisWarning):
    """Inputs a reader left out (unreadable images, bad records, bad rows); the data object's
    ``skipped`` lists every one with its reason, and a training run writes them to ``skipped.json``."""
