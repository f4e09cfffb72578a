"""Image-to-image networks (super-resolution, denoising, inpainting, enhancement) applied to images of
any size in bounded memory, tile by tile, with no seam between tiles.

The image is cut into a grid of near-equal cores of at most ``tile`` pixels a side. The network sees
each core grown by ``blend`` (the cross-fade band) and by ``context`` (pixels it needs to see but whose
output is thrown away), clamped to the image: at the image border nothing is padded by us, so the
network sees exactly what one pass over the whole image sees there. Each tile's output over its core
plus the blend band is added to the result with a weight that ramps linearly across the band shared
with the neighbouring tile (1 at the image border), then divided by the summed weights. When
``context`` covers the network's receptive radius every tile is exact and the result equals one pass
over the whole image; when it does not, the cross-fade hides the seams.

The result is written one row of tiles (a strip) at a time, so memory stays bounded: see
``tiled_apply``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from rich.progress import track

from omnivis.errors import ConfigError

Net = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis (rows or columns) is cut into tiles, in input pixels.

    Attributes:
        length: the axis length of the image.
        bounds: core boundaries, ``len(bounds) = cores + 1``; core ``i`` is ``[bounds[i], bounds[i+1])``.
        blend: half the width of the cross-fade band around each interior boundary (the band is
            ``[bound - blend, bound + blend)``); at most half the smallest core, so bands never overlap.
        window: the length of every tile's input window (the same for all tiles, so tiles batch).
        context: pixels of context read on each side of a core plus its blend band.
    """

    length: int
    bounds: tuple[int, ...]
    blend: int
    window: int
    context: int

    @property
    def cores(self) -> int:
        return len(self.bounds) - 1

    def span(self, i: int) -> tuple[int, int]:
        """Core ``i`` grown by the blend band at its interior edges: the part of the output it writes."""
        lo = self.bounds[i] - (self.blend if i > 0 else 0)
        hi = self.bounds[i + 1] + (self.blend if i < self.cores - 1 else 0)
        return lo, hi

    @property
    def longest_span(self) -> int:
        """The longest ``span``: the rows a strip accumulator must hold."""
        return max(hi - lo for lo, hi in map(self.span, range(self.cores)))

    def window_start(self, i: int) -> int:
        """Where tile ``i``'s input window starts: it holds the span plus ``context`` clamped to the image.

        Every window has the same length ``window``; a tile at the image border, which gets less
        context on its outer side, is shifted inward and so reads more on its inner side (never padded).
        """
        lo, _ = self.span(i)
        return min(max(lo - self.context, 0), self.length - self.window)

    def weights(self, i: int, scale: int) -> torch.Tensor:
        """(``(hi - lo) * scale``,) float weights of tile ``i`` over its span in output pixels: a linear
        ramp ``(k + 0.5) / band`` up across the band at an interior left edge, down at an interior right
        edge, 1 elsewhere; the two ramps of a shared band sum to 1, and none is 0 (no division by 0)."""
        lo, hi = self.span(i)
        w = torch.ones((hi - lo) * scale)
        band = 2 * self.blend * scale
        if band:
            ramp = (torch.arange(band, dtype=torch.float32) + 0.5) / band
            if i > 0:
                w[:band] = ramp
            if i < self.cores - 1:
                w[-band:] = ramp.flip(0)
        return w


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def plan_axis(length: int, tile: int, context: int, blend: int, align: int = 1) -> AxisPlan:
    """Cut an axis of ``length`` pixels into ``ceil(length / tile)`` near-equal cores (sizes differ by at
    most ``align``, so no sliver is left at the end); ``tile`` 0 or ``>= length`` gives one core.

    ``align`` > 1 (``length`` a multiple of it): core bounds, the blend band, the context and so every
    window start are multiples of ``align``, so a network that downsamples by ``align`` sees each tile
    on the same sampling grid as the whole image (else a stride-4 network samples other pixels).
    """
    n = 1 if tile == 0 or tile >= length else math.ceil(length / tile)
    n = max(1, min(n, length // align))
    bounds = tuple(round(i * length / n / align) * align for i in range(n + 1))
    smallest = min(b - a for a, b in zip(bounds, bounds[1:]))
    band = 0 if n == 1 else min(blend, smallest // 2) // align * align
    context = _round_up(context, align)
    largest = max(b - a for a, b in zip(bounds, bounds[1:]))
    window = min(length, largest + (2 * (band + context) if n > 1 else 0))
    return AxisPlan(length=length, bounds=bounds, blend=band, window=window, context=context)


def pad_to_multiple(image: torch.Tensor, align: int) -> torch.Tensor:
    """(C, H, W) -> H and W rounded up to multiples of ``align`` by repeating the last row and column
    (what the networks' own padding does), any dtype; the image itself when nothing is missing."""
    h, w = image.shape[-2:]
    if h % align == 0 and w % align == 0:
        return image
    rows = torch.arange(_round_up(h, align)).clamp_(max=h - 1)
    cols = torch.arange(_round_up(w, align)).clamp_(max=w - 1)
    return image.index_select(-2, rows).index_select(-1, cols)


def count_tiles(h: int, w: int, tile: int) -> int:
    """How many tiles (network inputs) ``tiled_apply`` cuts an ``h`` x ``w`` image into."""
    return plan_axis(h, tile, 0, 0).cores * plan_axis(w, tile, 0, 0).cores


def tiled_memory(height: int, width: int, tile: int, *, bytes_per_pixel: int, out_channels: int = 3, scale: int = 1,
                 context: int = 16, blend: int = 8, align: int = 1) -> int:
    """Bytes ``tiled_apply`` works in besides the image and its uint8 result, estimated: one tile's
    window through a network that holds ``bytes_per_pixel`` per window pixel (its activations and
    convolution workspace) plus the float strip accumulator (``out_channels + 1`` floats per output
    pixel of the tallest strip of rows). Arguments as ``tiled_apply``'s."""
    rows = plan_axis(_round_up(height, align), tile, context, blend, align)
    cols = plan_axis(_round_up(width, align), tile, context, blend, align)
    strip = (out_channels + 1) * rows.longest_span * scale * cols.length * scale * 4
    return rows.window * cols.window * bytes_per_pixel + strip


def tile_for_budget(height: int, width: int, budget: int, *, largest: int, bytes_per_pixel: int, smallest: int = 32,
                    step: int = 16, **plan) -> int:
    """The tile side for an ``height`` x ``width`` image whose ``tiled_memory`` fits in ``budget``
    bytes: ``largest`` (0: the whole image) if it fits, else the largest multiple of ``step`` below it
    that fits, else ``smallest``. ``plan``: ``out_channels``, ``scale``, ``context``, ``blend`` and
    ``align`` as ``tiled_apply`` is called with; the blend is taken as at most half the tile."""
    blend = plan.pop("blend", 8)
    side = max(height, width) if largest == 0 else largest
    candidates = [side, *range((side - 1) // step * step, smallest - 1, -step)]
    for tile in candidates:
        if tile < smallest:
            break
        if tiled_memory(height, width, tile, bytes_per_pixel=bytes_per_pixel, blend=min(blend, tile // 2), **plan) <= budget:
            return largest if tile == side else tile
    return min(smallest, side)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_image(image: object, extra: bool = False) -> torch.Tensor:
    """``image`` checked: a (C, H, W) uint8 or float tensor (``extra``: an added part, bool allowed)."""
    if extra and isinstance(image, torch.Tensor) and image.dtype == torch.bool and image.ndim == 3:
        return image
    if not isinstance(image, torch.Tensor):
        raise ConfigError(f"the image must be a (C, H, W) torch tensor, got {type(image).__name__} "
                          "(to_chw_tensor converts an (H, W, C) array)")
    if image.ndim != 3 or 0 in image.shape:
        raise ConfigError(f"the image must be a non-empty (C, H, W) tensor, got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise ConfigError(f"the image must be uint8 or float in [0, 1], got {image.dtype}")
    return image


def _batches(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_window(images: tuple[torch.Tensor, ...], rows: AxisPlan, cols: AxisPlan, r: int, c: int) -> torch.Tensor:
    """(C_in, window_h, window_w) float32 in [0, 1]: tile (r, c)'s input (the images' channels one after
    another), converted tile by tile so the whole image is never held as float."""
    y0, x0 = rows.window_start(r), cols.window_start(c)
    parts = [image[:, y0 : y0 + rows.window, x0 : x0 + cols.window] for image in images]
    parts = [part.float() / 255 if part.dtype == torch.uint8 else part.float() for part in parts]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _run_net(net: Net, inputs: torch.Tensor, scale: int, channels: int | None) -> torch.Tensor:
    """(N, C_out, h*scale, w*scale) float32 on the CPU: ``net(inputs)``, its shape checked."""
    with torch.inference_mode():
        out = net(inputs)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"the network returned a {type(out).__name__} for a {tuple(inputs.shape)} tile; "
                          "expected a tensor")
    n, _, h, w = inputs.shape
    c = channels if channels is not None else (out.shape[1] if out.ndim == 4 else "C_out")
    expected = (n, c, h * scale, w * scale)
    if tuple(out.shape) != expected:
        raise ConfigError(f"the network returned {tuple(out.shape)} for a {tuple(inputs.shape)} tile; "
                          f"expected {expected} (scale {scale})")
    return out.float().cpu()


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return (values * 255).clamp_(0, 255).round_().to(torch.uint8)


FLUSH_ROWS = 16
"""Output rows normalised and rounded to uint8 at a time (so no strip-sized float temporary is made)."""


class _StripWriter:
    """Accumulates tile outputs one strip (row of tiles) at a time and writes finished rows as uint8.

    The float accumulator covers only the current strip's output rows, from the top of its blend band
    with the strip above to the bottom of its band with the strip below. When the next strip starts, the
    rows above that next strip's band are final: they are normalised and written into ``out``, and the
    shared band (``2 * blend * scale`` rows, still waiting for the next strip's share) is moved to the top
    of the same buffer: one accumulator, sized for the tallest strip, serves every strip.
    """

    def __init__(self, out: torch.Tensor, rows: AxisPlan, cols: AxisPlan, scale: int) -> None:
        self.out, self.rows, self.cols, self.scale = out, rows, cols, scale
        self.row: int | None = None
        self.top = 0  # output row of acc[:, 0]
        self.held = 0  # rows of acc in use by the current strip
        tallest = rows.longest_span * scale
        self.acc = torch.zeros(out.shape[0], tallest, out.shape[2])  # weighted sum of tile outputs
        self.wsum = torch.zeros(tallest, out.shape[2])  # summed weights

    def add(self, r: int, c: int, tile_out: torch.Tensor) -> None:
        """Add tile (r, c)'s (C_out, window_h*scale, window_w*scale) output; tiles come in row-major order."""
        if r != self.row:
            self._start(r)
        s = self.scale
        (y_lo, y_hi), (x_lo, x_hi) = self.rows.span(r), self.cols.span(c)
        dy, dx = (y_lo - self.rows.window_start(r)) * s, (x_lo - self.cols.window_start(c)) * s
        crop = tile_out[:, dy : dy + (y_hi - y_lo) * s, dx : dx + (x_hi - x_lo) * s]
        weight = self.rows.weights(r, s)[:, None] * self.cols.weights(c, s)[None, :]
        self.acc[:, : self.held, x_lo * s : x_hi * s] += crop * weight
        self.wsum[: self.held, x_lo * s : x_hi * s] += weight

    def close(self) -> None:
        """Write every row still held (the last strip's)."""
        if self.row is not None:
            self._flush(self.held)

    def _start(self, r: int) -> None:
        lo, hi = self.rows.span(r)
        carry = 0
        if self.row is not None:
            done = lo * self.scale - self.top
            self._flush(done)
            carry = self.held - done
            self.acc[:, :carry] = self.acc[:, done : self.held].clone()  # the shared band (a few rows)
            self.wsum[:carry] = self.wsum[done : self.held].clone()
        self.held = (hi - lo) * self.scale
        self.acc[:, carry : self.held].zero_()
        self.wsum[carry : self.held].zero_()
        self.row, self.top = r, lo * self.scale

    def _flush(self, n: int) -> None:
        for a in range(0, n, FLUSH_ROWS):
            b = min(n, a + FLUSH_ROWS)
            self.out[:, self.top + a : self.top + b] = _to_uint8(self.acc[:, a:b] / self.wsum[a:b])


def tiled_apply(
    net: Net,
    image: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    scale: int = 1,
    tile: int = 256,
    context: int = 16,
    blend: int = 8,
    batch: int = 1,
    align: int = 1,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Apply an image-to-image network to an image of any size, tile by tile, in bounded memory.

    Memory: the whole image never goes through the network at once, and no float copy of the whole
    input or output is made. Tiles are processed in row-major order; a float accumulator and weight
    map cover only the current strip (one row of tiles) of output rows plus the blend band it shares
    with the next strip. When a strip is done its finished rows are normalised and written into the
    uint8 output, and the shared band is carried over to the next strip. Peak extra memory is about
    one strip of float output (``(C_out + 1) * (tile + 2*blend) * scale * W * scale`` floats), one batch
    of tiles in and out of the network, and the uint8 input and output.

    Args:
        net: takes a float (N, C_in, h, w) tensor in [0, 1] on ``device`` and returns
            (N, C_out, h*scale, w*scale) float in about [0, 1]; called under ``torch.inference_mode()``
            (put a module in eval mode first).
        image: (C_in, H, W) uint8, or float in [0, 1]; may carry extra channels (a mask for inpainting).
            A tuple of (C_i, H, W) uint8, bool (0 or 1) or float tensors of one size is read as their
            channels one after another, window by window (an image and its mask, never concatenated
            whole).
        scale: the network's upscaling factor; the output is (C_out, H*scale, W*scale).
        tile: the core tile side in input pixels; the image is cut into ``ceil(H / tile)`` x
            ``ceil(W / tile)`` near-equal cores. 0, or ``>= max(H, W)``: one pass over the whole image.
        context: input pixels read around each tile (clamped at the image border) whose output is thrown
            away; at least the network's receptive radius for a result equal to one whole-image pass.
        blend: input pixels on each side of a boundary between tiles over which they cross-fade (linear
            ramp), so no seam shows where ``context`` is too small; reduced to half the smallest core
            where cores are shorter than ``2 * blend``.
        batch: tiles per network call (every tile has the same input shape, so any tiles batch).
        align: the network's downsampling factor (4 for one that halves twice): tiles start on multiples
            of it, as the whole image's sampling grid does (``plan_axis``); an image whose sides are not
            multiples is padded by repeating its last row and column (a copy of the input) and the
            result cropped back.
        progress: show a transient progress bar over the tiles.
        device: where the network runs; tiles move there and back, the result is accumulated on the CPU.

    Returns:
        (C_out, H*scale, W*scale) uint8 tensor on the CPU, rounded and clamped to [0, 255].

    Raises:
        ConfigError: a bad argument (negative or non-integer, ``tile < 2 * blend``), an image that is not
            a (C, H, W) uint8/float tensor, or a network output of the wrong shape.
    """
    images = tuple(image) if isinstance(image, (tuple, list)) else (image,)
    images = tuple(_check_image(part, extra=i > 0) for i, part in enumerate(images))
    if len({tuple(part.shape[-2:]) for part in images}) > 1:
        raise ConfigError(f"the image's parts differ in size: {[tuple(part.shape) for part in images]}")
    scale = _check_int("scale", scale, 1)
    tile = _check_int("tile", tile, 0)
    context = _check_int("context", context, 0)
    blend = _check_int("blend", blend, 0)
    batch = _check_int("batch", batch, 1)
    align = _check_int("align", align, 1)
    if tile and tile < 2 * blend:
        raise ConfigError(f"tile must be larger than twice blend: tile {tile} < 2 * blend {2 * blend} "
                          "(use a larger tile or a smaller blend)")
    out_h, out_w = images[0].shape[-2:]
    images = tuple(pad_to_multiple(part, align) for part in images)
    height, width = images[0].shape[-2:]
    rows, cols = plan_axis(height, tile, context, blend, align), plan_axis(width, tile, context, blend, align)
    tiles: Iterable[tuple[int, int]] = [(r, c) for r in range(rows.cores) for c in range(cols.cores)]
    if progress:
        tiles = track(tiles, description="tiles", total=rows.cores * cols.cores, transient=True)

    writer: _StripWriter | None = None
    for chunk in _batches(tiles, batch):
        inputs = torch.stack([_read_window(images, rows, cols, r, c) for r, c in chunk]).to(device)
        channels = None if writer is None else writer.out.shape[0]
        outputs = _run_net(net, inputs, scale, channels)
        del inputs  # not held while the next batch runs
        if writer is None:
            out = torch.empty(outputs.shape[1], height * scale, width * scale, dtype=torch.uint8)
            writer = _StripWriter(out, rows, cols, scale)
        for (r, c), tile_out in zip(chunk, outputs):
            writer.add(r, c, tile_out)
        del outputs, tile_out
    writer.close()
    return writer.out[:, : out_h * scale, : out_w * scale]


def to_chw_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8/float array -> (C, H, W) tensor for ``tiled_apply``.

    The tensor is a view sharing the array's memory (a read-only array is copied first), so a large
    image is not duplicated.
    """
    if not isinstance(array, np.ndarray) or array.ndim not in (2, 3):
        raise ConfigError(f"expected an (H, W) or (H, W, C) array, got {getattr(array, 'shape', type(array))}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ConfigError(f"expected a uint8 or float array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def to_hwc_array(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor (``tiled_apply``'s output) -> (H, W, C) numpy array of the same dtype, on the CPU;
    take ``[..., 0]`` of a one-channel result for PIL."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3:
        raise ConfigError(f"expected a (C, H, W) tensor, got {getattr(tensor, 'shape', type(tensor))}")
    return tensor.detach().cpu().permute(1, 2, 0).numpy()
