"""Pictures of an edit evaluation: input, classical baseline(s), ours and the clean photo side by side,
with a zoomed crop under each, because restoration differences live in the details a whole-image
thumbnail hides; and one HTML report with the figures and the pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from omnivis.metrics.report import ReportSection, write_html_report, write_json

PANEL = 256
"""Side of each whole-image thumbnail and of each zoomed crop in a comparison picture."""


def _resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.NEAREST))


def _zoom_window(target: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int]:
    """(top, left, side) of the crop to zoom into: the hole's centre, else the most detailed region."""
    h, w = target.shape[:2]
    side = max(8, min(h, w) // 4)
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        cy, cx = int(ys.mean()), int(xs.mean())
    else:
        grey = target.astype(np.float32).mean(axis=2)
        detail = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
        cells = detail[: detail.shape[0] // side * side, : detail.shape[1] // side * side]
        if cells.size == 0:
            return 0, 0, min(h, w)
        sums = cells.reshape(cells.shape[0] // side, side, cells.shape[1] // side, side).sum(axis=(1, 3))
        row, col = np.unravel_index(int(sums.argmax()), sums.shape)
        cy, cx = row * side + side // 2, col * side + side // 2
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    return top, left, side


def comparison_picture(given: np.ndarray, outputs: dict[str, np.ndarray], target: np.ndarray, name: str,
                       folder: Path, scale: int = 1, mask: np.ndarray | None = None, target_label: str = "clean") -> Path:
    """One PNG: a row of whole images (input, each output, ``target``) and a row of the same zoomed crop.

    The input is enlarged to the target's size (nearest neighbour, so its pixels show) for super-resolution.
    """
    folder.mkdir(parents=True, exist_ok=True)
    h, w = target.shape[:2]
    columns = [("input", _resize_to(given, (h, w)))]
    columns += [(method, image) for method, image in outputs.items() if method != "input"]
    columns.append((target_label, target))
    top, left, side = _zoom_window(target, mask)
    thumb = (PANEL, max(1, round(PANEL * w / h))) if h >= w else (max(1, round(PANEL * h / w)), PANEL)
    label = 18
    sheet = Image.new("RGB", (len(columns) * PANEL, 2 * PANEL + label), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (title, image) in enumerate(columns):
        whole = Image.fromarray(image).resize((thumb[1], thumb[0]), Image.Resampling.BILINEAR)
        sheet.paste(whole, (i * PANEL, label))
        zoom = Image.fromarray(image[top : top + side, left : left + side]).resize((PANEL, PANEL), Image.Resampling.NEAREST)
        sheet.paste(zoom, (i * PANEL, label + PANEL))
        draw.text((i * PANEL + 4, 2), title, fill="black")
        box = [i * PANEL + left * thumb[1] / w, label + top * thumb[0] / h,
               i * PANEL + (left + side) * thumb[1] / w, label + (top + side) * thumb[0] / h]
        draw.rectangle(box, outline="red")
    path = folder / (Path(name).with_suffix("").as_posix().replace("/", "_") + ".png")
    sheet.save(path)
    return path


def write_edit_report(out: Path, op: str, metrics: dict, rows: list[dict], pictures: list[Path]) -> Path:
    """``edit_report.json`` (the figures and every photo's row) and ``edit_report.html``; returns the HTML."""
    write_json({"metrics": metrics, "per_image": rows}, out / "edit_report.json")
    figures = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "report_html"}
    sections = [
        ReportSection(f"{op}: ours against the classical baseline", text=str(metrics.get("protocol", "")), table=figures),
        ReportSection("per image", rows=[{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                                         for r in rows]),
        ReportSection("input / baseline / ours / clean (style for style transfer); zoomed crop below, red box",
                      images=[(p.stem, p) for p in pictures]),
    ]
    return write_html_report(out / "edit_report.html", f"omnivis edit report: {op}", sections)
