"""JSON and self-contained HTML reports.

Every number a command produces is written as JSON (for scripts) and, where a person will look at it, as
one HTML file with inline CSS and images embedded as data URIs, so a report can be mailed or attached to
an issue without a folder of assets. All writes go to a temporary file in the target folder and are moved
into place with ``os.replace``, so a killed run never leaves a half-written report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from omnivis.fileio import atomic_write_bytes

__all__ = [
    "ReportSection",
    "image_to_data_uri",
    "write_html_report",
    "write_json",
]

_MIN_SHORT_SIDE = 64


def _json_default(obj: Any) -> Any:
    """Turn numpy/torch scalars and arrays, paths and sets into JSON-native values."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    # numpy scalars/arrays and torch tensors all offer ``tolist`` (a 0-d one returns a plain scalar);
    # duck typing keeps torch out of this module's imports.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_json(data: dict, path: str | Path) -> Path:
    """Write ``data`` as indented JSON (key order kept) atomically and return the path.

    numpy and torch scalars/arrays are converted through a ``default=`` hook so callers can pass metric
    values straight from a computation.
    """
    text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _to_display_mode(image: Image.Image) -> Image.Image:
    """Bring any PIL mode to L, LA, RGB or RGBA so it can be saved as an ordinary 8-bit PNG."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # High bit-depth / float images: rescale the value range to 0..255 instead of clipping.
        array = np.asarray(image, dtype=np.float64)
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scale = 255.0 / (high - low) if high > low else 0.0
        array = np.nan_to_num((array - low) * scale, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def image_to_data_uri(image: Image.Image | str | Path, max_size: int = 256) -> str:
    """Encode an image as a ``data:image/png;base64,...`` URI sized for a report thumbnail.

    Tiny images (8x8 digits) are enlarged with NEAREST by an integer factor to at least 64 px on the short
    side so their pixels stay crisp and visible; large images are shrunk so the long side is at most
    ``max_size``, which keeps a report with many samples small.

    Args:
        image: A PIL image or a path to an image file (EXIF orientation is applied).
        max_size: Largest allowed side in pixels after resizing.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be positive, got {max_size}")
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
    image = _to_display_mode(image)
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"cannot encode an empty image of size {width}x{height}")
    if max(width, height) > max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    elif min(width, height) < _MIN_SHORT_SIDE:
        factor = math.ceil(_MIN_SHORT_SIDE / min(width, height))
        factor = max(1, min(factor, max_size // max(width, height)))
        if factor > 1:
            image = image.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class ReportSection:
    """One titled block of an HTML report.

    Attributes:
        heading: Section heading.
        text: A short paragraph (escaped, line breaks kept).
        table: Key -> value table; floats are shown with 4 decimals.
        rows: A table whose columns are the keys of the first row.
        images: ``(caption, source)`` pairs; a source is a PNG/JPEG path, a data URI or a PIL image.
            Files are embedded as data URIs so the report stays one self-contained file.
    """

    heading: str
    text: str = ""
    table: dict[str, object] | None = None
    rows: list[dict[str, object]] | None = None
    images: list[tuple[str, str | Path | Image.Image]] | None = None


_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       background: var(--bg); }
header { padding: 20px 32px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: var(--muted); font-size: 13px; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 32px 40px; }
section { margin-top: 28px; }
section h2 { font-size: 18px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
p { margin: 0 0 12px; white-space: pre-wrap; }
table { border-collapse: collapse; margin: 0 0 14px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.grid.single { grid-template-columns: 1fr; }
figure { margin: 0; padding: 6px; border: 1px solid var(--line); border-radius: 6px; background: var(--bg);
         text-align: center; }
figure img { max-width: 100%; height: auto; image-rendering: pixelated; }
.grid.single figure img { image-rendering: auto; }
figcaption { margin-top: 4px; font-size: 13px; color: var(--muted); word-break: break-word; }
"""

_MIME_BY_SUFFIX = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _image_src(source: str | Path | Image.Image) -> str:
    """Return a data URI for an image source so nothing outside the HTML file is referenced."""
    if isinstance(source, Image.Image):
        return image_to_data_uri(source)
    if isinstance(source, str) and source.startswith("data:"):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"report image not found: {path}")
    mime = _MIME_BY_SUFFIX.get(path.suffix.lower())
    if mime is not None:
        # Embed the file bytes as they are: plots keep their full resolution.
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return image_to_data_uri(path, max_size=1024)


def _format_value(value: object) -> tuple[str, bool]:
    """Format one cell; returns (escaped text, is_numeric) so numbers can be right-aligned."""
    if value is None:
        return "", False
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, bool):
        return html.escape(str(value)), False
    if isinstance(value, float):
        return html.escape(f"{value:.4f}"), True
    if isinstance(value, int):
        return html.escape(str(value)), True
    if isinstance(value, (dict, list, tuple)):
        return html.escape(json.dumps(value, default=_json_default, ensure_ascii=False)), False
    return html.escape(str(value)), False


def _cell(tag: str, value: object) -> str:
    text, numeric = _format_value(value)
    css = ' class="num"' if numeric and tag == "td" else ""
    return f"<{tag}{css}>{text}</{tag}>"


def _render_section(section: ReportSection) -> str:
    parts = [f"<section>\n<h2>{html.escape(section.heading)}</h2>"]
    if section.text:
        parts.append(f"<p>{html.escape(section.text)}</p>")
    if section.table:
        body = "\n".join(
            f"<tr><th>{html.escape(str(key))}</th>{_cell('td', value)}</tr>" for key, value in section.table.items()
        )
        parts.append(f'<table class="kv">\n{body}\n</table>')
    if section.rows:
        columns = list(section.rows[0].keys())
        head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
        body = "\n".join(
            "<tr>" + "".join(_cell("td", row.get(column)) for column in columns) + "</tr>" for row in section.rows
        )
        parts.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")
    if section.images:
        grid_class = "grid single" if len(section.images) == 1 else "grid"
        figures = "\n".join(
            f'<figure><img src="{html.escape(_image_src(source))}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            for caption, source in section.images
        )
        parts.append(f'<div class="{grid_class}">\n{figures}\n</div>')
    parts.append("</section>")
    return "\n".join(parts)


def write_html_report(path: str | Path, title: str, sections: list[ReportSection]) -> Path:
    """Write a single self-contained HTML report (inline CSS, embedded images, no JS) atomically.

    Every piece of user-provided text (title, headings, captions, cells) is escaped with ``html.escape``,
    since class names and file names come from user data.

    Args:
        path: Output ``.html`` file.
        title: Page title, shown in the header.
        sections: Blocks rendered in order.

    Returns:
        The path written.
    """
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    body = "\n".join(_render_section(section) for section in sections)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1>"
        f'<div class="meta">Generated {html.escape(generated)} by omnivis</div></header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return atomic_write_bytes(path, page.encode("utf-8"))
