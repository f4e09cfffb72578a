"""Fairness reports: a task's own metrics on each group of images, and how far the groups are apart.

``omnivis eval BUNDLE --groups CSV`` reads a ``path,group`` table (:func:`read_group_table`), scores
each group's subset with the very function that scores the whole evaluation
(:func:`per_group_metrics`: a figure for a group is exactly what ``omnivis eval`` gives on those
images alone) and draws one bar chart per headline metric (:func:`plot_group_metrics`). Every task
that evaluates labelled images uses these three functions, so the report has one shape everywhere:

    {"csv": ..., "groups": {group: the task's metrics}, "counts": {group: images},
     "largest_gap": {metric: max - min}, "ratio": {metric: min / max}, "headline": [...], "png": ...}
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

import numpy as np

from omnivis.errors import ConfigError, DataError

__all__ = ["GroupTable", "gap_and_ratio", "group_report", "per_group_metrics", "plot_group_metrics",
           "read_group_table"]

HEADER = ("path", "group")
# counts, not qualities: reported per group, never compared as a gap
COUNT_KEYS = frozenset({"num_samples", "num_images", "num_objects", "num_pixels", "num_box_images", "pairs",
                        "genuine_pairs", "impostor_pairs", "images"})


@dataclass(frozen=True)
class GroupTable:
    """A group per evaluated image (same order as the images), from one CSV.

    Attributes:
        groups: one group name per evaluated image.
        csv: the file read, for reports and errors.
        outside: rows naming images of the data that the evaluated split left out (skipped).
    """

    groups: list[str]
    csv: str
    outside: int = 0

    def subsets(self) -> dict[str, np.ndarray]:
        """group -> indices of its images (int64, ascending), groups sorted by name."""
        array = np.array(self.groups)
        return {g: np.flatnonzero(array == g) for g in sorted(set(self.groups))}


def _key(text: str) -> str:
    """A path as written in a CSV or named by a reader, in one spelling: '/' separators, no './'."""
    text = text.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _index(names: Sequence[str], sources: Sequence[object] | None) -> tuple[dict, dict]:
    """(exact key -> image indices, path-suffix key -> image indices) for matching CSV rows."""
    exact: dict[str, set[int]] = {}
    suffix: dict[str, set[int]] = {}
    for i, name in enumerate(names):
        exact.setdefault(_key(str(name)), set()).add(i)
        source = sources[i] if sources is not None else None
        if isinstance(source, (str, Path)):
            path = Path(source).expanduser()
            exact.setdefault(_key(str(path)), set()).add(i)
            exact.setdefault(_key(str(path.resolve())), set()).add(i)
            parts = PurePosixPath(_key(str(path))).parts
            for start in range(1, len(parts)):
                suffix.setdefault("/".join(parts[start:]), set()).add(i)
    return exact, suffix


def _match(written: str, exact: dict, suffix: dict) -> set[int]:
    key = _key(written)
    if key in exact:
        return exact[key]
    resolved = _key(str(Path(key).expanduser().resolve()))
    if resolved in exact:
        return exact[resolved]
    return suffix.get(key, set())


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, group) per data row; a header ``path,group`` is optional."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the groups file ({err})") from None
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as err:
        raise DataError(f"{path}: not a CSV file ({err})") from None
    out = []
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and tuple(c.strip().lower() for c in row[:2]) == HEADER:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{number}: expected two columns 'path,group', got {','.join(row)!r}")
        out.append((number, row[0].strip(), row[1].strip()))
    if not out:
        raise DataError(f"{path}: no rows; write one 'path,group' row per evaluated image")
    return out


def read_group_table(path: str | Path, names: Sequence[str], sources: Sequence[object] | None = None,
                     outside: Sequence[tuple[str, object]] = ()) -> GroupTable:
    """Read a ``path,group`` CSV and give every evaluated image its group.

    A row's path matches an image when it is the name the reader gives the image (a path relative to
    the data folder; ``digits/0007`` or ``shapes-seed1/0003`` for built-in data), the image's path as
    written (absolute, or relative to the current folder), or the end of its path (``cats/1.jpg``, or
    just ``1.jpg`` when no other image has that file name).

    Args:
        path: the CSV file.
        names: how the data names each evaluated image.
        sources: each evaluated image's file (None or an array for in-memory images).
        outside: (name, source) of images of the same data that the evaluated split left out: rows
            naming them are skipped and counted, so one table can describe the whole data set.

    Raises:
        DataError: an unreadable or malformed file, a row naming no evaluated image (the first is
            named, the rest counted), a row naming several, an image with two groups, or evaluated
            images without a row (named).
        ConfigError: every evaluated image is in one group.
    """
    path = Path(path)
    rows = _read_rows(path)
    exact, suffix = _index(names, sources)
    out_exact, out_suffix = _index([n for n, _ in outside], [s for _, s in outside])
    groups: list[str | None] = [None] * len(names)
    unknown: list[tuple[int, str]] = []
    skipped = 0
    for number, written, group in rows:
        hits = _match(written, exact, suffix)
        if not hits:
            if _match(written, out_exact, out_suffix):
                skipped += 1
            else:
                unknown.append((number, written))
            continue
        if len(hits) > 1:
            shown = ", ".join(sorted(str(names[i]) for i in hits)[:3])
            raise DataError(f"{path}:{number}: '{written}' names {len(hits)} images ({shown}); write the path under "
                            "the data folder")
        (i,) = hits
        if groups[i] is not None and groups[i] != group:
            raise DataError(f"{path}:{number}: '{written}' is in group '{group}' here but '{groups[i]}' on an earlier "
                            "row")
        groups[i] = group
    if unknown:
        number, written = unknown[0]
        more = f" (and {len(unknown) - 1} more rows name no evaluated image)" if len(unknown) > 1 else ""
        example = f"; the images are named like '{names[0]}'" if len(names) else ""
        raise DataError(f"{path}:{number}: '{written}' is not one of the {len(names)} evaluated images{more}{example}")
    missing = [str(names[i]) for i, g in enumerate(groups) if g is None]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{path}: no group for {len(missing)} of the {len(names)} evaluated images: {shown}; "
                        "every evaluated image needs a row")
    distinct = sorted(set(groups))
    if len(distinct) < 2:
        raise ConfigError(f"{path}: every evaluated image is in group '{distinct[0]}'; a fairness report compares "
                          "two groups or more")
    return GroupTable([str(g) for g in groups], str(path), skipped)


def _comparable(value: object) -> bool:
    """A number a gap can be taken over: not a count, not None/NaN, not COCO's -1 ('no such objects')."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0)


def gap_and_ratio(groups: Mapping[str, Mapping[str, object]],
                  keys: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, float | None]]:
    """For each metric: the largest gap between groups (max - min) and the ratio min / max.

    ``keys`` default to every top-level number the groups report, counts left out. A group whose
    value is missing, NaN or negative (COCO's -1) is left out of that metric; a metric needs two
    groups. The ratio is 1.0 when all groups agree and None when max is 0 and they do not.
    """
    if keys is None:
        keys = []
        for metrics in groups.values():
            keys += [k for k, v in metrics.items() if k not in keys and k not in COUNT_KEYS and _comparable(v)]
    gaps: dict[str, float] = {}
    ratios: dict[str, float | None] = {}
    for key in keys:
        values = [float(m[key]) for m in groups.values() if _comparable(m.get(key))]
        if len(values) < 2:
            continue
        low, high = min(values), max(values)
        gaps[key] = high - low
        ratios[key] = 1.0 if high == low else (low / high if high > 0 else None)
    return gaps, ratios


def per_group_metrics(score_fn: Callable[[np.ndarray], dict], subsets: Mapping[str, np.ndarray]) -> dict:
    """``score_fn`` (image indices -> the task's metrics dict) on each group's subset, with gaps.

    Returns:
        ``{"groups": {group: metrics}, "counts": {group: images}, "largest_gap": {metric: max - min},
        "ratio": {metric: min / max}}``.
    """
    groups = {name: score_fn(np.asarray(idx, dtype=np.int64)) for name, idx in subsets.items()}
    gaps, ratios = gap_and_ratio(groups)
    return {"groups": groups, "counts": {name: int(len(idx)) for name, idx in subsets.items()},
            "largest_gap": gaps, "ratio": ratios}


def plot_group_metrics(report: Mapping, metrics: Sequence[str], path: str | Path) -> Path:
    """One bar chart per metric, a bar per group, the gap and ratio in each chart's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if m in report["largest_gap"]] or list(report["largest_gap"])[:3]
    names = list(report["groups"])
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(1.2 + max(3.0, 0.7 * len(names)) * len(metrics), 3.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [report["groups"][g].get(metric) for g in names]
        shown = [v if _comparable(v) else 0.0 for v in values]
        ax.bar(range(len(names)), shown, color="#3b7dd8")
        for i, v in enumerate(values):
            ax.text(i, shown[i], "n/a" if not _comparable(v) else f"{v:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), [f"{g}\n(n={report['counts'][g]})" for g in names], fontsize=8)
        ratio = report["ratio"].get(metric)
        ax.set_title(f"{metric}\ngap {report['largest_gap'][metric]:.3f}"
                     + ("" if ratio is None else f", ratio {ratio:.3f}"), fontsize=9)
        top = max(shown) if shown else 1.0
        ax.set_ylim(0, max(1.0, top * 1.15) if top <= 1.0 else top * 1.15)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def group_report(score_fn: Callable[[np.ndarray], dict], table: GroupTable, headline: Sequence[str],
                 out_dir: str | Path | None) -> dict:
    """What ``eval --groups`` stores under ``per_group``: :func:`per_group_metrics` plus the CSV, the
    headline metrics and ``per_group.png`` in ``out_dir`` (None: no picture)."""
    report = {"csv": table.csv, **per_group_metrics(score_fn, table.subsets()),
              "headline": [m for m in headline]}
    if table.outside:
        report["rows_outside_split"] = table.outside
    if out_dir is not None:
        report["png"] = str(plot_group_metrics(report, headline, Path(out_dir) / "per_group.png"))
    return report
