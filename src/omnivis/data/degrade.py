"""Degradations that image-editing networks learn to undo, synthesized from clean photos.

An edit network never needs paired data: each op (``superres``, ``denoise``, ``inpaint``,
``enhance``) is a function clean -> degraded, and the network learns degraded -> clean. Training
applies it to random crops with a generator seeded by (seed, epoch, sample index); evaluation applies
the same function to whole test photos with a generator seeded by the photo's index, so every run,
baseline and benchmark sees the very same degraded pixels. The degraded image is quantized to 8 bits,
as a file a user hands over would be.

Images are (3, H, W) float tensors in [0, 1].
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from omnivis.errors import ConfigError

OPS = ("superres", "denoise", "inpaint", "enhance", "style")
NOISES = ("gaussian", "realistic", "blind")
MASKS = ("mixed", "free-form", "box")
FILLS = ("telea+ns", "telea")
CONDITION_SIZE = 6
"""Length of the whole-image statistics ``enhance`` conditions on: per-channel mean and std."""


@dataclass(frozen=True)
class Degradation:
    """What an edit network undoes; kept in its bundle so evaluation degrades test photos alike.

    Attributes:
        op: ``superres``, ``denoise``, ``inpaint``, ``enhance`` or ``style`` (nothing to undo: the
            content is kept as it is and a style image is drawn beside it).
        scale: super-resolution factor (2 or 4); 1 for the other ops.
        noise: denoising noise: ``gaussian`` (of ``sigma``), ``realistic`` (Poisson shot noise, Gaussian
            read noise, then JPEG) or ``blind`` (Gaussian of a sigma drawn from ``sigma_range``).
        sigma: Gaussian noise level on the 0..255 scale.
        sigma_range: the blind range, 0..255 scale.
        masks: inpainting holes: ``free-form`` brush strokes, ``box`` rectangles or ``mixed`` (half each).
        mask_cell: holes are drawn in cells of this many pixels (the training crop), a third of the
            cells of a larger image get one: test holes are then as large as those trained on
            (None: one hole sized by the whole image).
        fill: the classical guess in the holes that the inpainting network corrects: ``telea+ns``,
            the mean of OpenCV's Telea and Navier-Stokes fills (0.05-0.1 dB above the better of the
            two on the test photos: their errors partly cancel), or ``telea`` (bundles made before
            ``fill`` existed).
    """

    op: str
    scale: int = 1
    noise: str = "gaussian"
    sigma: float = 25.0
    sigma_range: tuple[float, float] = (5.0, 50.0)
    masks: str = "mixed"
    mask_cell: int | None = None
    fill: str = "telea+ns"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"unknown edit op '{self.op}'; choose one of {', '.join(OPS)}")
        if self.op == "superres" and self.scale not in (2, 3, 4, 8):
            raise ConfigError(f"superres scale must be 2, 3, 4 or 8, got {self.scale}")
        if self.op != "superres" and self.scale != 1:
            raise ConfigError(f"scale is for superres only; {self.op} keeps the size (scale 1)")
        if self.noise not in NOISES:
            raise ConfigError(f"unknown noise '{self.noise}'; choose one of {', '.join(NOISES)}")
        if self.masks not in MASKS:
            raise ConfigError(f"unknown masks '{self.masks}'; choose one of {', '.join(MASKS)}")
        if self.fill not in FILLS:
            raise ConfigError(f"unknown inpainting fill '{self.fill}'; choose one of {', '.join(FILLS)}")
        low, high = self.sigma_range
        if not 0 <= low <= high or self.sigma < 0:
            raise ConfigError(f"noise levels must be >= 0 with sigma_range low <= high, got sigma {self.sigma}, "
                              f"sigma_range {self.sigma_range}")

    def to_dict(self) -> dict:
        return {**asdict(self), "sigma_range": list(self.sigma_range)}

    @classmethod
    def from_dict(cls, values: dict) -> Degradation:
        values = dict(values)
        values.setdefault("fill", "telea")  # bundles from before the field: their network corrects Telea's fill
        if "sigma_range" in values:
            values["sigma_range"] = tuple(float(v) for v in values["sigma_range"])
        return cls(**values)

    def describe(self) -> str:
        """One line for reports: what the test photos went through."""
        if self.op == "superres":
            return f"bicubic downscaling x{self.scale} (antialiased), 8-bit"
        if self.op == "denoise":
            return {"gaussian": f"Gaussian noise sigma {self.sigma:g}/255, 8-bit",
                    "blind": f"Gaussian noise sigma {self.sigma:g}/255 (trained blind over "
                             f"{self.sigma_range[0]:g}..{self.sigma_range[1]:g}), 8-bit",
                    "realistic": "Poisson shot noise + Gaussian read noise, then JPEG"}[self.noise]
        if self.op == "style":
            return "content photos restyled after another photo (AdaIN): nothing degraded"
        if self.op == "inpaint":
            where = f"a third of the {self.mask_cell}-px cells" if self.mask_cell else "the image"
            return (f"{self.masks} holes (strokes and/or boxes, 5-40% of {where}), given filled by "
                    + ("OpenCV's Telea" if self.fill == "telea" else "the mean of OpenCV's Telea and Navier-Stokes"))
        return "darkened (gain and gamma), sometimes low contrast, plus sensor noise, 8-bit"


@dataclass
class Degraded:
    """A degraded image and what the network is given with it.

    Attributes:
        image: (3, h, w) float in [0, 1], 8-bit levels; (H / scale, W / scale) for superres; for
            inpaint, with the holes filled by the classical guess (``classical_fill``).
        mask: (1, H, W) float, 1 where pixels are missing (inpaint), else None.
        condition: (CONDITION_SIZE,) whole-image statistics (enhance), else None.
    """

    image: torch.Tensor
    mask: torch.Tensor | None = None
    condition: torch.Tensor | None = None


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as a saved PNG would."""
    return torch.round(image.clamp(0, 1) * 255) / 255


def crop_to_multiple(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) to multiples of ``scale`` (bottom and right), as SR benchmarks do."""
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(C, H, W) -> (C, H // scale, W // scale): antialiased bicubic, the SR benchmarks' degradation
    (MATLAB ``imresize``); H and W must be multiples of ``scale``."""
    h, w = image.shape[-2:]
    small = F.interpolate(image[None], size=(h // scale, w // scale), mode="bicubic", antialias=True,
                          align_corners=False)
    return small[0]


def bicubic_upscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, h * scale, w * scale): the bicubic interpolation SR is measured against,
    and the skip path of our SR networks."""
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)


def image_statistics(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (6,): per-channel mean and std, the whole-image context ``enhance`` is given
    (every tile of a large photo sees the same numbers, so tiles agree on how bright to make it)."""
    flat = image.reshape(image.shape[0], -1)
    return torch.cat([flat.mean(dim=1), flat.std(dim=1, unbiased=False)])


CONTEXT_SIDE = 128
"""``enhance`` measures its whole-image statistics on a copy this small (shorter side), as it was
trained: training photos are darkened at 64-128 px and measured there; a 12-Mpx photo is not copied
to float to be measured."""


def context_statistics(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) uint8 or float image -> ``image_statistics`` of its first 3 channels, measured on an
    antialiased copy with a shorter side of :data:`CONTEXT_SIDE` (at most)."""
    from torchvision.transforms.v2 import functional as TF

    rgb = image[:3]
    if min(rgb.shape[-2:]) > CONTEXT_SIDE:
        rgb = TF.resize(rgb, CONTEXT_SIDE, antialias=True)
    rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    return image_statistics(rgb)


def _torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def _gaussian(image: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    noise = torch.randn(image.shape, generator=_torch_generator(rng))
    return image + noise * (sigma / 255.0)


def _realistic_noise(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A camera's noise: Poisson shot noise of a random exposure, read noise, then JPEG."""
    photons = float(np.exp(rng.uniform(math.log(20), math.log(300))))  # photons at white
    generator = _torch_generator(rng)
    shot = torch.poisson(image * photons, generator=generator) / photons
    read = torch.randn(image.shape, generator=generator) * (rng.uniform(1.0, 6.0) / 255.0)
    noisy = quantize(shot + read)
    array = (noisy * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=int(rng.integers(40, 91)))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255.0


def free_form_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool brush strokes in the style of DeepFill v2: a few polylines of random width."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    side = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        brush = max(2, int(side * rng.uniform(0.04, 0.12)))
        for _ in range(int(rng.integers(2, 7))):
            angle = rng.uniform(0, 2 * math.pi)
            length = side * rng.uniform(0.1, 0.35)
            nx = float(np.clip(x + length * math.cos(angle), 0, width - 1))
            ny = float(np.clip(y + length * math.sin(angle), 0, height - 1))
            draw.line([(x, y), (nx, ny)], fill=255, width=brush)
            draw.ellipse([nx - brush / 2, ny - brush / 2, nx + brush / 2, ny + brush / 2], fill=255)
            x, y = nx, ny
    return np.asarray(mask) > 0


def box_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool: one rectangle, 15-45% of each side."""
    mask = np.zeros((height, width), dtype=bool)
    h = max(1, int(height * rng.uniform(0.15, 0.45)))
    w = max(1, int(width * rng.uniform(0.15, 0.45)))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    mask[top : top + h, left : left + w] = True
    return mask


def random_mask(height: int, width: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A training or test hole of ``kind`` (``mixed``: a stroke or a box, equally likely), covering
    5-40% of the image (redrawn until it does, at most 20 times)."""
    for _ in range(20):
        use_box = kind == "box" or (kind == "mixed" and rng.random() < 0.5)
        mask = box_mask(height, width, rng) if use_box else free_form_mask(height, width, rng)
        if 0.05 <= mask.mean() <= 0.40:
            return mask
    return mask


def cell_masks(height: int, width: int, kind: str, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Holes sized like training ones over a large image: the image is cut into ``cell``-pixel cells
    and about a third of them (at least one) get a ``random_mask`` of their own."""
    mask = np.zeros((height, width), dtype=bool)
    rows, cols = max(1, height // cell), max(1, width // cell)
    chosen = rng.random((rows, cols)) < 1 / 3
    if not chosen.any():
        chosen[rng.integers(0, rows), rng.integers(0, cols)] = True
    for r, c in zip(*np.nonzero(chosen)):
        top, left = r * cell, c * cell
        h, w = min(cell, height - top), min(cell, width - left)
        mask[top : top + h, left : left + w] = random_mask(h, w, kind, rng)
    return mask


INPAINT_RADIUS = 3


def opencv_inpaint(image: np.ndarray, holes: np.ndarray, method: str = "telea") -> np.ndarray:
    """OpenCV's classical inpainting (``cv2.inpaint``, radius 3): Telea's fast marching (``telea``) or
    Navier-Stokes (``ns``). image: uint8 (H, W, 3) RGB or (H, W); holes: (H, W), nonzero = missing
    (their values are ignored). OpenCV reads BGR, so colour images are flipped in and out."""
    import cv2

    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    mask = (np.asarray(holes) != 0).astype(np.uint8) * 255
    if image.ndim == 2:
        return cv2.inpaint(np.ascontiguousarray(image), mask, INPAINT_RADIUS, flag)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(cv2.inpaint(bgr, mask, INPAINT_RADIUS, flag), cv2.COLOR_BGR2RGB)


def classical_fill(image: torch.Tensor, mask: torch.Tensor, fill: str = "telea+ns") -> torch.Tensor:
    """(3, H, W) image (uint8, or float in [0, 1]) with (1, H, W) holes -> the holes filled by ``fill``
    (``Degradation.fill``), in the image's dtype: the guess the inpainting network refines (it starts
    as exactly this)."""
    uint8 = image.dtype == torch.uint8
    array = (image if uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)).permute(1, 2, 0).numpy()
    holes = mask[0].bool().numpy()
    filled = opencv_inpaint(array, holes, "telea")
    if fill == "telea+ns":
        both = filled.astype(np.uint16) + opencv_inpaint(array, holes, "ns")
        filled = ((both + 1) // 2).astype(np.uint8)  # the mean, halves rounded up
    filled = torch.from_numpy(filled).permute(2, 0, 1)
    return filled if uint8 else filled.float() / 255.0


def _darken(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Low light: gamma 1.4-2.6 and gain 0.25-0.7; half the time also low contrast; sensor noise."""
    dark = image.clamp(0, 1) ** rng.uniform(1.4, 2.6) * rng.uniform(0.25, 0.7)
    if rng.random() < 0.5:
        middle = dark.mean()
        dark = middle + (dark - middle) * rng.uniform(0.4, 0.8)
    return _gaussian(dark, rng.uniform(1.0, 5.0), rng)


def degrade(clean: torch.Tensor, degradation: Degradation, rng: np.random.Generator) -> Degraded:
    """Degrade a clean (3, H, W) image in [0, 1]; every random draw comes from ``rng``.

    For ``superres`` H and W must be multiples of the scale (``crop_to_multiple``).
    """
    op = degradation.op
    if op == "style":
        return Degraded(clean)
    if op == "superres":
        return Degraded(quantize(bicubic_downscale(clean, degradation.scale)))
    if op == "denoise":
        if degradation.noise == "realistic":
            return Degraded(quantize(_realistic_noise(clean, rng)))
        sigma = degradation.sigma if degradation.noise == "gaussian" else rng.uniform(*degradation.sigma_range)
        return Degraded(quantize(_gaussian(clean, sigma, rng)))
    if op == "inpaint":
        h, w = clean.shape[1:]
        cell = degradation.mask_cell
        holes = cell_masks(h, w, degradation.masks, cell, rng) if cell else random_mask(h, w, degradation.masks, rng)
        mask = torch.from_numpy(holes)[None].float()
        return Degraded(classical_fill(clean * (1 - mask), mask, degradation.fill), mask=mask)
    dark = quantize(_darken(clean, rng))
    return Degraded(dark, condition=context_statistics(dark))


def scored_degradation(degradation: Degradation) -> Degradation:
    """The fixed degradation a benchmark scores: a blind denoiser is scored at ``sigma``."""
    if degradation.op == "denoise" and degradation.noise == "blind":
        return Degradation(op="denoise", noise="gaussian", sigma=degradation.sigma)
    return degradation
