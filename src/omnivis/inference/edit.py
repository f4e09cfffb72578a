"""Using an edit bundle: restore images of any size tile by tile, and score it against the classical
baseline of its op on whole test photos.

``EditPredictor.edit`` takes a user's image (and, for inpainting, a mask or a box); ``restore`` takes
an image already degraded by ``data/degrade.py`` (evaluation, benchmarks). Both run the network
through ``inference/tiling.py``: a tile of the input at a time, with the network's receptive field
of context around it and a cross-fade between tiles, so no seam shows; ``edit`` picks the tile from a
memory budget tied to the image's 8-bit buffers (``default_tile``), so an edit's extra memory stays
under twice the input + output. Grey images are converted to RGB (the three channels equal) on the way in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import track

from omnivis.bundle import Bundle
from omnivis.data.decode import decode_tensor
from omnivis.data.degrade import (
    Degradation,
    Degraded,
    bicubic_upscale,
    classical_fill,
    context_statistics,
    crop_to_multiple,
    degrade,
    scored_degradation,
)
from omnivis.data.images import MAX_IMAGE_PIXELS
from omnivis.errors import BundleError, ConfigError, ImageError
from omnivis.inference.base import Predictor
from omnivis.inference.tiling import tile_for_budget, tiled_apply
from omnivis.models.restoration import build_restoration_net, run_restoration
from omnivis.seeding import mix_seed

TASK = "edit"
EVAL_SEED = 2024
"""Seeds each test photo's degradation (with its index): every run and baseline sees the same pixels."""
MAX_CONTEXT = 128
"""Context read around a tile is the network's receptive radius, at most this (the inpainting
network sees ~250 px; beyond 128 px, context costs more than it changes)."""
EDIT_MEMORY = 0.5
"""``edit`` without a tile picks the largest tile (at most the bundle's) whose working memory
(``tiling.tiled_memory``: one tile's activations and the strip accumulator) fits in this fraction of
the image's 8-bit input + output, so the extra memory of an edit stays under twice those buffers."""
MIN_EDIT_MEMORY = 32 * 2**20
"""... but never less than this many bytes: a small image would otherwise get tiny, slow tiles."""
FILL_CELL = 16
"""Inpainting's classical fill runs on crops around each group of holes, found on a grid of cells of
this side; a group's crop reaches one cell beyond its holes (OpenCV's fill reads 3 px around them)."""


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` -> four ints (the rectangle to fill)."""
    try:
        x, y, w, h = (int(float(v)) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--box '{text}' must be x,y,w,h in pixels, e.g. 40,30,100,80") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ConfigError(f"--box '{text}': x and y must be >= 0, w and h > 0")
    return x, y, w, h


def read_mask(mask: str | Path | np.ndarray | Image.Image, size: tuple[int, int], where: str = "mask") -> torch.Tensor:
    """A mask (a PNG path, an array or a PIL image, grey or RGB; nonzero = fill) -> (1, H, W) bool, checked.

    Args:
        size: the image's (height, width); a mask of another size is an error naming both.
    """
    if isinstance(mask, (str, Path)):
        where = str(mask)
    array = decode_tensor(mask if not isinstance(mask, np.ndarray) or mask.dtype != bool else mask.astype(np.uint8),
                          "L")[0].numpy()  # as every image is read: grey, transparency on white
    if array.shape != tuple(size):
        raise ConfigError(f"{where}: the mask is {array.shape[1]}x{array.shape[0]} px but the image is "
                          f"{size[1]}x{size[0]} px; give a mask of the image's size")
    holes = array > 0
    if not holes.any():
        raise ConfigError(f"{where}: the mask is empty (all zero): nothing to fill; white marks what to fill")
    if holes.all():
        raise ConfigError(f"{where}: the mask covers the whole image: nothing is left to fill it from")
    return torch.from_numpy(holes)[None]


def box_to_mask(box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """(x, y, w, h) -> (1, H, W) bool mask; a box outside the image is an error."""
    x, y, w, h = box
    height, width = size
    if x >= width or y >= height:
        raise ConfigError(f"--box {x},{y},{w},{h} starts outside the {width}x{height} px image")
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[:, y : min(height, y + h), x : min(width, x + w)] = True
    if mask.all():
        raise ConfigError(f"--box {x},{y},{w},{h} covers the whole image: nothing is left to fill it from")
    return mask


def fill_near_holes(image: torch.Tensor, mask: torch.Tensor, fill: str) -> torch.Tensor:
    """``classical_fill`` of a (3, H, W) uint8 image's (1, H, W) holes, computed on a crop around each
    group of holes (holes within two ``FILL_CELL`` cells of each other form a group) and written into
    ``image`` in place: the same pixels as one fill of the whole image, in memory that grows with the
    holes' extent instead of the image's. Returns ``image``."""
    import cv2

    holes = mask[0].bool()
    height, width = holes.shape
    cell = FILL_CELL
    cols = -(-width // cell)
    grid = np.zeros((-(-height // cell), cols), np.uint8)
    for i in range(grid.shape[0]):  # which cells hold a hole, a strip of rows at a time
        row = holes[i * cell : (i + 1) * cell].any(0)
        grid[i] = torch.nn.functional.pad(row, (0, cols * cell - width)).view(cols, cell).any(1).numpy()
    grown = cv2.dilate(grid, np.ones((3, 3), np.uint8))  # one cell of margin around every hole
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    for k in range(1, count):
        gx, gy, gw, gh = (int(v) for v in stats[k, :4])
        y0, y1, x0, x1 = gy * cell, min(height, (gy + gh) * cell), gx * cell, min(width, (gx + gw) * cell)
        own = torch.from_numpy(labels[gy : gy + gh, gx : gx + gw] == k)  # this group's cells only
        own = own.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[: y1 - y0, : x1 - x0]
        crop_holes = holes[y0:y1, x0:x1] & own
        crop = image[:, y0:y1, x0:x1]
        filled = classical_fill(crop, crop_holes[None], fill)
        crop.copy_(torch.where(crop_holes, filled, crop))
    return image


def hole_box(mask: torch.Tensor, margin: int, align: int = 1) -> tuple[int, int, int, int]:
    """(1, H, W) mask -> ``(y0, y1, x0, x1)``: the bounding box of its nonzero pixels grown by ``margin``
    on every side, its corners on multiples of ``align`` (or at the image's edge), clamped to the image."""
    height, width = mask.shape[-2:]
    rows, cols = mask[0].any(1).nonzero()[:, 0], mask[0].any(0).nonzero()[:, 0]
    y0, x0 = max(0, int(rows[0]) - margin) // align * align, max(0, int(cols[0]) - margin) // align * align
    y1 = min(height, -(-(int(rows[-1]) + 1 + margin) // align) * align)
    x1 = min(width, -(-(int(cols[-1]) + 1 + margin) // align) * align)
    return y0, y1, x0, x1


def check_strength(strength: float) -> None:
    if not strength >= 0:
        raise ConfigError(f"strength must be >= 0, got {strength}")


class EditPredictor(Predictor):
    """An edit bundle ready to restore images; ``edit`` for users' images, ``restore`` for degraded ones."""

    task = TASK
    noun = "image-editing model"

    def __init__(self, bundle: Bundle, device: str = "cpu") -> None:
        super().__init__(bundle, device)
        c = self.config
        self.op = str(c["op"])
        self.scale = int(c.get("scale", 1))
        self.degradation = Degradation.from_dict(c["degradation"])
        self.model = self.ready(self._build(c))
        self.tile = 256 if c.get("tile") is None else int(c["tile"])  # 0: whole images
        self.context = min(MAX_CONTEXT, int(self.model.receptive_radius))
        if self.op == "inpaint":
            import cv2  # noqa: F401 - the classical fill's library, loaded once with the bundle, not per image

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes the network holds per pixel of a tile's input window (activations and convolution
        workspace; measured on CPU in fp32, rounded up): what ``default_tile`` budgets."""
        c = self.config
        if c["arch"] == "adain":
            return 20 * int(c["width"])
        if c["arch"] == "inpaint":
            return 26 * int(c["width"])
        return 32 * int(c["width"]) + 64 * self.scale * self.scale

    def default_tile(self, height: int, width: int, image: tuple[int, int] | None = None) -> int:
        """The tile ``edit`` uses on an ``height`` x ``width`` input when none is given: the bundle's,
        or smaller, so that the tiling's working memory fits ``EDIT_MEMORY`` of the image's 8-bit input
        + output (at least ``MIN_EDIT_MEMORY``) and an edit peaks under twice those buffers.

        Args:
            image: inpainting: the whole image's (height, width) when only a crop of it around the holes
                is tiled; its result is written into the input, so the output's bytes, which are never
                allocated, join the budget at the same ``EDIT_MEMORY`` share.
        """
        pixels = height * width if image is None else image[0] * image[1]
        buffers = 3 * pixels * (1 + self.scale * self.scale) + (3 * pixels if image is not None else 0)
        budget = max(MIN_EDIT_MEMORY, int(EDIT_MEMORY * buffers))
        style = self.op == "style"
        align = self.model.stride if style else 4 if self.op == "inpaint" else 1
        return tile_for_budget(height, width, budget, largest=self.tile, bytes_per_pixel=self.bytes_per_pixel,
                               scale=self.scale, context=self.context, blend=16 if style else 8, align=align)

    def _build(self, c: dict) -> torch.nn.Module:
        if c["arch"] == "adain":
            from omnivis.models.backbones import create_backbone
            from omnivis.models.style import StyleTransferNet

            return StyleTransferNet(create_backbone(c["encoder"]), int(c["level"]), int(c["width"]))
        return build_restoration_net(c["arch"], self.scale, int(c["width"]), int(c["blocks"]),
                                     conditioned=self.op == "enhance")

    def _network(self, condition: torch.Tensor | None, strength: float):
        """The function ``tiled_apply`` calls on each (N, C, h, w) tile."""
        model, op, scale = self.model, self.op, self.scale

        def run(tiles: torch.Tensor) -> torch.Tensor:
            # inpaint: tiles are multiples of 4 (tiled_apply's align), as the network halves twice
            image, mask = (tiles[:, :3], tiles[:, 3:]) if op == "inpaint" else (tiles, None)
            if mask is not None and not mask.any():
                return image  # no hole in the window: the network would return it unchanged (image + 0)
            stats = condition.to(tiles.device).expand(len(tiles), -1) if condition is not None else None
            out = run_restoration(model, op, image, mask, stats)
            if strength != 1.0:
                base = bicubic_upscale(tiles, scale) if scale > 1 else tiles
                out = base + strength * (out - base)
            return out

        return run

    def restore(self, degraded: Degraded, strength: float = 1.0, tile: int | None = None,
                progress: bool = False) -> torch.Tensor:
        """A degraded (3, h, w) image (uint8, or float in [0, 1]) -> the restored (3, h * scale, w * scale)
        uint8 tensor. The image stays as given: tiles are converted to float one at a time."""
        check_strength(strength)
        if self.op == "style":
            raise ConfigError("a style bundle restyles a photo after a style image: use edit(image, style=...)")
        if self.op == "inpaint" and strength != 1.0:
            raise ConfigError("--strength blends a restoration with its input; inpainting has no input to blend "
                              "in the hole (leave it at 1)")
        image = degraded.image
        if self.op == "inpaint":
            if degraded.mask is None:
                raise ConfigError("inpainting needs a mask (--mask MASK.png) or a box (--box x,y,w,h)")
            image = (image, degraded.mask.bool())  # read together window by window, never copied whole
        # enhance: the whole image's statistics, measured as training measured them (on a small copy)
        condition = context_statistics(image)[None] if self.op == "enhance" else None
        tile = self.tile if tile is None else tile
        out = tiled_apply(self._network(condition, strength), image, scale=self.scale, tile=tile,
                          context=self.context, blend=min(8, tile // 4) if tile else 8, progress=progress,
                          align=4 if self.op == "inpaint" else 1, device=self.device)
        return out.contiguous()

    def edit(self, image: str | Path | np.ndarray | Image.Image, *, mask=None, box: tuple[int, int, int, int] | None = None,
             style=None, strength: float = 1.0, tile: int | None = None, scale: int | None = None,
             max_pixels: int = MAX_IMAGE_PIXELS, progress: bool = False) -> np.ndarray:
        """Edit one image (a path, PIL image or array; grey becomes RGB) -> (H * s, W * s, 3) uint8.

        Args:
            mask: inpaint: what to fill (a PNG path, array or PIL image of the image's size; nonzero = fill).
            box: inpaint: ``(x, y, w, h)`` to fill, instead of a mask.
            style: style: the style image (a path, PIL image or array).
            strength: 0 gives the input (upscaled), 1 the network's output; in between blends them
                (style: AdaIN's alpha, blended in feature space).
            tile: tile side in input pixels (None: the bundle's, or smaller on a large image, as
                ``default_tile`` picks for memory; 0: the whole image at once).
            scale: the factor the caller expects; one the bundle was not trained for is an error.
            max_pixels: larger images are refused before they are decoded.
        """
        if scale is not None and scale != self.scale:
            raise ConfigError(f"{self.bundle.path}: this bundle does {self.op} at x{self.scale}, not x{scale}; "
                              f"train one with omnivis train edit --op superres --scale {scale}")
        check_strength(strength)
        where = str(image) if isinstance(image, (str, Path)) else "image"
        # uint8; a file is refused before decoding if it, or what it becomes (x4: 16 times the pixels), is too large
        tensor = decode_tensor(image, "RGB", max_pixels=max_pixels // (self.scale * self.scale))
        pixels = tensor.shape[1] * tensor.shape[2] * self.scale * self.scale
        if pixels > max_pixels:
            raise ImageError(f"{where}: {tensor.shape[2]}x{tensor.shape[1]} makes {pixels:,} pixels at x{self.scale}, "
                             f"more than the limit of {max_pixels:,} pixels (--max-pixels)")
        if (style is None) == (self.op == "style"):
            raise ConfigError(f"{self.bundle.path}: a style bundle needs a style image (--style)" if self.op == "style"
                              else f"{self.bundle.path}: a {self.op} bundle takes no style image; --style is for style bundles")
        if self.op == "style":
            if mask is not None or box is not None:
                raise ConfigError(f"{self.bundle.path}: a style bundle takes no mask or box")
            from omnivis.inference.edit_style import stylize

            styled = stylize(self.model, tensor, decode_tensor(style, "RGB", max_pixels=max_pixels), strength=strength,
                             tile=self.default_tile(*tensor.shape[-2:]) if tile is None else tile,
                             context=self.context, progress=progress, device=self.device)
            return styled.permute(1, 2, 0).numpy()  # a view: no copy of the whole result
        hole = None
        if self.op == "inpaint":
            size = tuple(tensor.shape[-2:])
            if (mask is None) == (box is None):
                raise ConfigError(f"{where}: inpainting needs exactly one of a mask (--mask) or a box (--box)")
            hole = read_mask(mask, size) if mask is not None else box_to_mask(box, size)
            tensor = fill_near_holes(tensor, hole, self.degradation.fill)  # the guess the network corrects
        elif mask is not None or box is not None:
            raise ConfigError(f"{self.bundle.path}: a {self.op} bundle takes no mask or box; they are for inpaint bundles")
        if hole is not None and tile != 0:
            # inpaint in place, only around the holes (elsewhere the network returns its input): the crop
            # of their bounding box grown by the tiling's context and blend, on the image's 4-px grid
            height, width = tensor.shape[-2:]
            y0, y1, x0, x1 = hole_box(hole, self.context + 8, align=4)
            hole = hole[:, y0:y1, x0:x1].clone()  # the whole-image mask is not held while the network runs
            tile = self.default_tile(y1 - y0, x1 - x0, image=(height, width)) if tile is None else tile
            tensor[:, y0:y1, x0:x1] = self.restore(Degraded(tensor[:, y0:y1, x0:x1], mask=hole), strength=strength,
                                                   tile=tile, progress=progress)
            return tensor.permute(1, 2, 0).numpy()
        tile = self.default_tile(*tensor.shape[-2:]) if tile is None else tile
        out = self.restore(Degraded(tensor, mask=hole), strength=strength, tile=tile, progress=progress)
        return out.permute(1, 2, 0).numpy()

    def predict(self, images: Sequence, top_k: int = 1, names: Sequence[str] | None = None):
        raise BundleError(f"{self.bundle.path}: an edit bundle writes images; use omnivis edit {self.bundle.path} "
                          "IMAGE... --out DIR")


def degraded_test_photo(clean: torch.Tensor, degradation: Degradation, index: int) -> Degraded:
    """Photo ``index`` of a test set as every evaluation and benchmark degrades it."""
    return degrade(clean, scored_degradation(degradation), np.random.default_rng(mix_seed(EVAL_SEED, index)))


def to_uint8_array(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] or uint8 -> (H, W, 3) uint8."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return image.permute(1, 2, 0).contiguous().numpy()


def estimated_sigma(image: np.ndarray) -> float:
    """The noise level (0..255) of a photo with camera-like noise, whose sigma was never one number:
    scikit-image's wavelet estimate (Donoho), what non-local means is then given."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(image, channel_axis=-1, average_sigmas=True) * 255.0)


def score_photos(predictor: EditPredictor, photos: Sequence, names: Sequence[str], progress: bool = True,
                 pictures: Path | None = None, shown: int = 6) -> dict:
    """Degrade each clean photo, restore it with the bundle and with the op's classical baselines, and
    score all of them by the same protocol (``metrics.edit``); the benchmark calls this too.

    Returns the mean of every figure over the photos, the per-photo rows, and the pictures' paths.
    """
    from omnivis.inference.edit_baselines import BASELINES, run_baseline
    from omnivis.metrics.edit import PROTOCOL, masked_psnr, quality
    from omnivis.metrics.edit_report import comparison_picture

    if predictor.op == "style":
        from omnivis.inference.edit_style import score_style

        return score_style(predictor, photos, names, progress, pictures, shown)

    degradation = scored_degradation(predictor.degradation)
    scale, op = predictor.scale, predictor.op
    border = scale if op == "superres" else 0
    rows, seconds, megapixels, shown_pictures = [], 0.0, 0.0, []
    items = list(enumerate(zip(photos, names)))
    for index, (photo, name) in track(items, description=f"scoring {op}", transient=True, disable=not progress):
        clean = decode_tensor(photo, "RGB").float() / 255.0
        clean = crop_to_multiple(clean, 4 * scale)
        degraded = degraded_test_photo(clean, degradation, index)
        started = time.perf_counter()
        ours = to_uint8_array(predictor.restore(degraded))
        seconds += time.perf_counter() - started
        megapixels += ours.shape[0] * ours.shape[1] / 1e6
        target, given = to_uint8_array(clean), to_uint8_array(degraded.image)
        hole = degraded.mask[0].bool().numpy() if degraded.mask is not None else None
        shown_input = np.where(hole[..., None], 0, given).astype(np.uint8) if hole is not None else given
        outputs = {"ours": ours}
        sigma = degradation.sigma if op != "denoise" or degradation.noise != "realistic" else estimated_sigma(given)
        for baseline in BASELINES[op]:
            outputs[baseline] = run_baseline(baseline, given, scale=scale, sigma=sigma, mask=hole)
        if op not in ("superres", "inpaint"):  # an inpainting input is a classical fill (the baselines')
            outputs["input"] = given
        row: dict = {"image": name}
        for method, output in outputs.items():
            for key, value in quality(output, target, crop_border=border).items():
                row[f"{method}_{key}"] = value
            if hole is not None:
                row[f"{method}_psnr_hole"] = masked_psnr(output, target, hole)
        rows.append(row)
        if pictures is not None and len(shown_pictures) < shown:
            shown_pictures.append(comparison_picture(shown_input, outputs, target, name, pictures, scale=scale,
                                                     mask=hole))
    keys = [k for k in rows[0] if k != "image"] if rows else []
    means = {k: float(np.mean([r[k] for r in rows if np.isfinite(r[k])] or [float("inf")])) for k in keys}
    key = "psnr_hole" if op == "inpaint" else "psnr_y"
    best = max(BASELINES[op], key=lambda b: means[f"{b}_{key}"]) if rows else None
    summary = {**means, "images": len(rows), "protocol": PROTOCOL, "degradation": degradation.describe(),
               "best_baseline": best, "megapixels_per_s": megapixels / seconds if seconds else None}
    if best is not None:
        summary[f"gain_{key}_db"] = means[f"ours_{key}"] - means[f"{best}_{key}"]
    return {"summary": summary, "rows": rows, "pictures": shown_pictures}


def evaluate_edit(bundle_dir: str | Path, data: str | None = None, split: str = "auto", out_dir: str | Path | None = None,
                  strict: bool = False, progress: bool = True) -> dict:
    """Score an edit bundle on clean photos (default: the test photos it was trained to be scored on,
    scikit-image's), against its op's classical baselines; writes ``edit_report.json`` and
    ``edit_report.html`` (input / baseline / ours / clean, side by side, zoomed) into ``out_dir``.

    ``split`` is accepted for the shared ``omnivis eval`` signature: test photos are never trained on.
    """
    from omnivis.data.builtin import resolve_classification_data
    from omnivis.metrics.edit_report import write_edit_report

    predictor = EditPredictor.from_dir(bundle_dir)
    data = data or (predictor.config.get("split") or {}).get("test_data") or "builtin:photos"
    photos = resolve_classification_data(data, strict=strict)
    out = Path(out_dir) if out_dir is not None else None
    pictures = out / "edit_examples" if out is not None else None
    scored = score_photos(predictor, [s.source for s in photos.samples], [s.name for s in photos.samples],
                          progress=progress, pictures=pictures)
    metrics = {"data": str(data), **scored["summary"]}
    if out is not None:
        metrics["report_html"] = str(write_edit_report(out, predictor.op, metrics, scored["rows"], scored["pictures"]))
    return metrics
