"""benchmarks/results.json, which every benchmark script writes into: each merges its figures under
its own keys and keeps every other script's (``python benchmarks/X.py`` puts this folder on the path)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def read_results(path: Path = RESULTS) -> dict:
    """The stored figures (empty when there is no file yet)."""
    return json.loads(path.read_text()) if path.exists() else {}


def merge_results(figures: dict, path: Path = RESULTS) -> Path:
    """Store ``figures`` (top-level keys) in ``path``, every other key as it is. The file is read just
    before writing, so what another script wrote during a long run is kept."""
    results = read_results(path)
    results.update(figures)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
