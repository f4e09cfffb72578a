"""The ONNX exporter prints each of its stages: kept, and shown only when an export fails."""

from __future__ import annotations

import contextlib
import io
import sys
import warnings


@contextlib.contextmanager
def quiet_exporter():
    """Silence ``torch.onnx.export``'s stdout, stderr and warnings; on an exception, write what it said
    to stderr before the exception goes on."""
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception:
        sys.stderr.write(chatter.getvalue())
        raise
