"""RePaint inpainting (Lugmayr et al. 2022) with a diffusion generator bundle.

A diffusion model trained only to make whole images can fill a hole: at every reverse step the known
pixels are replaced by the input noised to that step's level, so the model only has to invent the
missing ones, and "jumps" (re-noising ``jump_length`` steps back up, ``jump_n_sample`` times) let the
fill and the known border agree. This complements the learned inpainting network of ``omnivis train
edit --op inpaint``: RePaint needs no inpainting training but works only at the bundle's own size.

The scheduler math and the loop are diffusers': ``RePaintScheduler`` (``set_timesteps``, ``step``,
``undo_step``) driven exactly as ``RePaintPipeline.__call__`` drives it, so a seed gives the pipeline's
own result (``tests/edit/test_repaint.py`` checks this); only class labels are added, which the
pipeline cannot pass.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import RePaintScheduler
from rich.progress import track

from omnivis.data.images import MAX_IMAGE_PIXELS, array_to_image
from omnivis.errors import ConfigError

if TYPE_CHECKING:
    from omnivis.tasks.generate.sample import GeneratorPredictor

MAX_STEPS = 1000  # as for sampling: and never more than the model's training timesteps


def repaint_scheduler(train_scheduler_config: dict) -> RePaintScheduler:
    """The bundle's training ``DDPMScheduler`` config -> a ``RePaintScheduler`` with the same betas.

    Only the keys RePaint takes are passed on, so diffusers does not warn about the DDPM-only ones;
    RePaint's step assumes the model predicts the noise, which omnivis diffusion always trains for.
    """
    prediction = train_scheduler_config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ConfigError(f"RePaint needs a model that predicts the noise (epsilon); this one predicts '{prediction}'")
    accepted = inspect.signature(RePaintScheduler.__init__).parameters
    return RePaintScheduler.from_config({k: v for k, v in train_scheduler_config.items() if k in accepted})


@torch.no_grad()
def repaint_tensor(model, scheduler: RePaintScheduler, known: torch.Tensor, keep: torch.Tensor, *, steps: int,
                   jump_length: int, jump_n_sample: int, labels: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Fill the unknown pixels of ``known`` with RePaint; the loop of diffusers' ``RePaintPipeline``.

    Noise is drawn from ``generator`` in the pipeline's order (start noise, then the scheduler's own
    draws), so the same generator state gives the pipeline's result.

    Args:
        model: a diffusers ``UNet2DModel`` predicting the noise ``eps``.
        scheduler: a ``RePaintScheduler`` (its ``eta`` already set: 0 DDIM-like, 1 DDPM).
        known: (B, C, H, W) float in [-1, 1], the image; its pixels where ``keep`` is 0 are ignored.
        keep: (B or 1, 1, H, W) float, diffusers' convention: 1 = keep the known pixel, 0 = fill.
        labels: (B,) class indices for a conditional UNet (the null class for "no class"), else None.
        generator: a CPU generator for every draw.

    Returns:
        (B, C, H, W) float in [-1, 1]; the kept pixels come back only approximately (re-noised and
        denoised at the last step), so callers composite the exact input back in.
    """
    device = known.device
    x = torch.randn(known.shape, generator=generator, dtype=known.dtype).to(device)  # randn_tensor's draw on CPU
    scheduler.set_timesteps(steps, jump_length, jump_n_sample, device)
    t_last = scheduler.timesteps[0] + 1
    timesteps = track(scheduler.timesteps, description="repainting", total=len(scheduler.timesteps),
                      transient=True, disable=not progress)
    for t in timesteps:
        if t < t_last:  # a reverse step: denoise, then put the noised known pixels back
            eps = model(x, t, class_labels=labels).sample
            x = scheduler.step(eps, t, x, known, keep, generator).prev_sample
        else:  # a jump: re-noise from t_last up to t
            x = scheduler.undo_step(x, t_last, generator)
        t_last = t
    return x.clamp(-1.0, 1.0)


def _as_array(value: np.ndarray | torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _check_image(image: np.ndarray, size: int) -> None:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) at the bundle's square size, or a one-line error."""
    if image.dtype != np.uint8:
        raise ConfigError(f"RePaint takes a uint8 image, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ConfigError(f"RePaint takes an (H, W) grey or (H, W, 3) RGB image, got shape {tuple(image.shape)}")
    h, w = image.shape[:2]
    if (h, w) != (size, size):
        raise ConfigError(f"the diffusion bundle makes {size}x{size} images; this image is {w}x{h}: resize it first "
                          "or use an inpaint edit bundle, which works at any size")


def _missing(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) or (H, W, 1) mask, nonzero = missing -> (H, W) bool; refuses nothing or everything missing."""
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != shape:
        raise ConfigError(f"the mask is {tuple(mask.shape)} but the image is {shape}: they must match")
    missing = mask != 0
    if not missing.any():
        raise ConfigError("the mask marks no pixel missing: nothing to fill")
    if missing.all():
        raise ConfigError("the mask marks every pixel missing: RePaint needs known pixels to fill around; "
                          "use omnivis generate for a whole new image")
    return missing


def _to_model_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W[, 1 or 3]) -> (H, W, channels): grey to RGB repeats the channel, RGB to grey is PIL's
    "L" luma, the conversion the model's training images went through."""
    have = 1 if image.ndim == 2 else image.shape[2]
    if have != channels:
        image = np.array(array_to_image(image, "RGB" if channels == 3 else "L"))  # a writable copy
    return image.reshape(*image.shape[:2], channels)


def _to_input_layout(generated: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The model's uint8 (H, W, C_model) -> the layout of the user's image ``like``."""
    want = 1 if like.ndim == 2 else like.shape[2]
    if generated.shape[2] != want:
        generated = _to_model_channels(generated, want)
    return generated.reshape(like.shape)


def _labels(predictor: GeneratorPredictor, class_: str | None) -> torch.Tensor | None:
    """(1,) class index for a conditional bundle (the null class when ``class_`` is None), else None."""
    if not predictor.conditional:
        predictor.class_index(class_)  # a class for an unconditional bundle: its clear error
        return None
    if class_ is not None:
        return torch.tensor([predictor.class_index(class_)], dtype=torch.long)
    if not predictor.config.get("train_config", {}).get("cfg_dropout", 0):
        raise ConfigError(f"{predictor.bundle.path}: this diffusion is class-conditional and never learnt an "
                          f"unconditional pass (cfg_dropout 0); pick a class ({', '.join(predictor.classes[:20])})")
    return torch.tensor([predictor.net["num_classes"]], dtype=torch.long)  # the null class that label dropout taught


def _check_schedule(steps: int, jump_length: int, jump_n_sample: int, eta: float, train_timesteps: int) -> None:
    limit = min(MAX_STEPS, train_timesteps)
    if not 1 <= steps <= limit:
        raise ConfigError(f"steps must be in 1..{limit}, got {steps}")
    if jump_length < 1 or jump_n_sample < 1:
        raise ConfigError(f"jump_length and jump_n_sample must be >= 1, got {jump_length} and {jump_n_sample}")
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be in 0..1, got {eta}")


def repaint(predictor: GeneratorPredictor, image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, *,
            steps: int = 50, jump_length: int = 10, jump_n_sample: int = 10, class_: str | None = None,
            seed: int = 0, eta: float = 0.0, progress: bool = False) -> np.ndarray:
    """Fill the masked pixels of ``image`` with a diffusion bundle's model, RePaint-style.

    The model runs roughly ``steps + (jump_n_sample - 1) * jump_length * (steps // jump_length - 1)``
    times (410 with the defaults), so this is slow next to an inpaint edit bundle but needs no
    inpainting training.

    Args:
        predictor: a loaded ``generate`` bundle of method ``diffusion``.
        image: uint8 (H, W) grey, (H, W, 1) or (H, W, 3) RGB (a tensor in the same layout), exactly the
            bundle's size. Grey given to an RGB model is repeated to three channels and RGB given to a
            grey model is converted to luma; the fill comes back in the image's own layout.
        mask: (H, W) bool or uint8, nonzero = missing (to fill). Some pixels, not all, must be missing.
        steps: reverse diffusion steps (spaced evenly over the training timesteps).
        jump_length: steps re-noised per jump ("j" in the paper).
        jump_n_sample: times each jump is made ("r" in the paper); 1 turns resampling off.
        class_: a class-conditional bundle's class to fill with; None uses the null class its label
            dropout taught (classifier-free guidance's unconditional pass).
        seed: every random draw comes from a generator seeded with it: the same seed, the same fill.
        eta: noise of the reverse steps, diffusers' ``RePaintScheduler.eta``: 0 (the pipeline's
            default) is DDIM-like, 1 is the paper's DDPM ancestral step.
        progress: show a transient progress bar over the scheduler's timesteps.

    Returns:
        uint8 array of ``image``'s shape; the pixels the mask keeps are exactly the input's.

    Raises:
        ConfigError: for a bundle that is not diffusion, a wrong size, dtype or shape, an empty or
            full mask, a class the bundle does not have, or out-of-range steps.
    """
    if predictor.method != "diffusion":
        raise ConfigError(f"RePaint needs a diffusion bundle; this one is '{predictor.method}'")
    if predictor.text:
        raise ConfigError(f"{predictor.bundle.path}: RePaint fills holes with class-conditional or unconditional "
                          "diffusion bundles; this one is text-conditioned (train one without --text)")
    image, mask = _as_array(image), _as_array(mask)
    _check_image(image, predictor.img_size)
    missing = _missing(mask, image.shape[:2])
    scheduler = repaint_scheduler(predictor.net["scheduler"])
    _check_schedule(steps, jump_length, jump_n_sample, eta, scheduler.config.num_train_timesteps)
    labels = _labels(predictor, class_)
    scheduler.eta = eta  # as RePaintPipeline sets it

    device = next(predictor.model.parameters()).device
    pixels = torch.from_numpy(np.ascontiguousarray(_to_model_channels(image, predictor.channels)))
    known = (pixels.permute(2, 0, 1)[None].float() / 127.5 - 1.0).to(device)  # (1, C, H, W) in [-1, 1]
    # ours: mask nonzero = missing; diffusers' RePaint: 1 = keep the known pixel, 0 = fill. Hence the flip.
    keep = torch.from_numpy(~missing)[None, None].float().to(device)  # (1, 1, H, W)
    out = repaint_tensor(predictor.model, scheduler, known, keep, steps=steps, jump_length=jump_length,
                         jump_n_sample=jump_n_sample, labels=None if labels is None else labels.to(device),
                         generator=torch.Generator().manual_seed(int(seed)), progress=progress)
    generated = ((out[0].cpu() + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # as sample.to_uint8
    generated = _to_input_layout(generated, image)
    return np.where(missing.reshape(*missing.shape, *([1] * (image.ndim - 2))), generated, image)


class RePaintEditor:
    """A diffusion generator bundle behind ``EditPredictor.edit``'s interface, filling holes by RePaint."""

    op, scale = "inpaint (RePaint)", 1

    def __init__(self, bundle: str | Path, device: str = "cpu", *, steps: int = 50, seed: int = 0,
                 class_: str | None = None) -> None:
        from omnivis.tasks.generate.sample import GeneratorPredictor

        self.predictor = GeneratorPredictor.from_dir(bundle, device=device)
        if self.predictor.method != "diffusion":  # before any output is written
            raise ConfigError(f"{bundle}: RePaint needs a diffusion bundle; this one is '{self.predictor.method}'")
        self.tile, self.steps, self.seed, self.class_ = 0, steps, seed, class_

    def edit(self, image, *, mask=None, box=None, style=None, strength: float = 1.0, tile=None, scale=None,
             max_pixels: int = MAX_IMAGE_PIXELS, progress: bool = False) -> np.ndarray:
        """Fill ``mask`` or ``box`` of ``image`` (a path, PIL image or array at the bundle's size) ->
        (H, W, 3) uint8; ``tile`` is ignored (the model sees its whole image)."""
        from omnivis.data.decode import decode_tensor
        from omnivis.inference.edit import box_to_mask, read_mask

        if style is not None or strength != 1.0 or scale not in (None, 1):
            raise ConfigError("a diffusion bundle fills holes (RePaint); --style, --strength and --scale do not apply")
        # RGB as given: repaint converts for a grey model and puts the fill back in the photo's layout
        array = decode_tensor(image, "RGB", max_pixels=max_pixels).permute(1, 2, 0).numpy()
        size = array.shape[:2]
        if (mask is None) == (box is None):
            raise ConfigError(f"{image}: RePaint needs exactly one of a mask (--mask) or a box (--box)")
        holes = read_mask(mask, size) if mask is not None else box_to_mask(box, size)
        filled = repaint(self.predictor, array, holes[0].numpy() > 0, steps=self.steps, class_=self.class_,
                         seed=self.seed, progress=progress)
        return filled if filled.ndim == 3 else filled[..., None].repeat(3, axis=2)
