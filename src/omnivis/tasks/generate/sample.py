"""``GeneratorPredictor``: sample and interpolate from a generator bundle, reproducibly from a seed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omnivis.bundle import Bundle, load_bundle, load_bundle_weights
from omnivis.data.images import load_images
from omnivis.data.transforms import generator_transform
from omnivis.errors import BundleError, ConfigError
from omnivis.tasks.generate.config import TASK
from omnivis.tasks.generate.methods import METHOD_SPECS
from omnivis.tasks.generate.spec import SampleOptions

MAX_SAMPLES = 1024  # per call: bounds memory and time; call again with another seed for more
BATCH_DRAW = 256  # generate_tensor draws latents in parts of this many: calls up to it draw theirs at once
MAX_STEPS = 1000  # sampling steps (and never more than the model's training timesteps)
MAX_FRAMES = 64


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows * (H + pad), cols * (W + pad), C) grid on black."""
    n, h, w, c = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
    return grid


def to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_images(images: np.ndarray, out: str | Path, columns: int | None = None, scale: int = 1) -> list[Path]:
    """Write the grid and each image: ``out`` ending in .png is the grid (singles beside it as
    STEM_000.png ...); otherwise ``out`` is a folder holding grid.png and 000.png ...; returns paths."""
    out = Path(out)
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        grid_path, single = out, lambda i: out.with_name(f"{out.stem}_{i:03d}.png")
    else:
        out.mkdir(parents=True, exist_ok=True)
        grid_path, single = out / "grid.png", lambda i: out / f"{i:03d}.png"
    grid = to_pil(image_grid(images, columns))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    grid.save(grid_path)
    paths = [grid_path]
    for i, im in enumerate(images):
        to_pil(im).save(single(i))
        paths.append(single(i))
    return paths


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two Gaussian latents (keeps their norm typical of the prior)."""
    af, bf = a.flatten(), b.flatten()
    omega = torch.arccos((af @ bf / (af.norm() * bf.norm())).clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


class GeneratorPredictor:
    """Rebuilds a generator from its bundle; ``generate`` and ``interpolate`` return uint8 images.

    A text-conditioned bundle (``text``) loads the text encoder it recorded, or ``text_encoder`` after
    checking it embeds text the same way (a ``BundleError`` naming both otherwise); it then takes a
    ``prompt`` instead of a class.
    """

    def __init__(self, bundle: Bundle, device: str = "cpu", text_encoder: str | None = None) -> None:
        if bundle.task != TASK:
            raise BundleError(
                f"{bundle.path}: is a '{bundle.task}' bundle, not a generator; make one with omnivis train generate"
            )
        cfg = bundle.config
        self.bundle, self.config = bundle, cfg
        self.method = cfg["method"]
        self.spec = METHOD_SPECS[self.method]
        self.net = cfg["net"]
        self.classes: list[str] = list(cfg.get("classes") or [])
        self.conditional = bool(cfg.get("conditional"))
        self.img_size, self.channels = int(cfg["img_size"]), int(cfg["in_chans"])
        self.text = bool(cfg.get("text"))
        self.example_prompts: list[str] = list(cfg.get("example_prompts") or [])
        self.encoder = None
        if self.text:
            from omnivis.models.text import encoder_for_bundle

            self.encoder = encoder_for_bundle(cfg.get("text_encoder") or {}, text_encoder, bundle.path)
        elif text_encoder is not None:
            raise ConfigError(f"{bundle.path}: this {self.method} is not text-conditioned; leave out --text-encoder")
        self.model = self.spec.build(self.net)
        load_bundle_weights(self.model, bundle)
        self.model.eval().to(device)
        self.device = device

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu", text_encoder: str | None = None) -> GeneratorPredictor:
        return cls(load_bundle(path), device=device, text_encoder=text_encoder)

    def class_index(self, name: str | int | None) -> int | None:
        """A class name (or index) -> its index; None for "cycle through the classes"."""
        if name is None:
            return None
        if self.text:
            raise ConfigError(f"{self.bundle.path}: this generator is text-conditioned: give --prompt, not --class "
                              f"(e.g. --prompt '{self._example()}')")
        if not self.conditional:
            raise ConfigError(f"{self.bundle.path}: this {self.method} is unconditional; leave out --class")
        if str(name) in self.classes:
            return self.classes.index(str(name))
        raise ConfigError(f"class '{name}' is not one of the bundle's classes ({', '.join(self.classes[:20])})")

    def _example(self) -> str:
        return self.example_prompts[0] if self.example_prompts else "a red circle"

    def text_embeddings(self, n: int, prompt: str | Sequence[str] | None) -> torch.Tensor:
        """A prompt (or ``n`` prompts) -> (n, D) embeddings of the bundle's text encoder.

        Raises:
            ConfigError: no prompt, an empty one, or a count of prompts other than ``n``.
        """
        if prompt is None:
            raise ConfigError(f"{self.bundle.path}: this generator is text-conditioned: give --prompt "
                              f"(e.g. --prompt '{self._example()}')")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if len(prompts) not in (1, n):
            raise ConfigError(f"give one prompt or {n} prompts (one per image), got {len(prompts)}")
        embeddings = self.encoder.encode(prompts)  # an empty prompt: its ConfigError; too long: a warning
        return embeddings.expand(n, -1) if len(prompts) == 1 else embeddings

    def _condition(self, n: int, class_: str | int | None, prompt: str | Sequence[str] | None) -> torch.Tensor | None:
        """(n,) class indices, (n, D) text embeddings, or None: what the method's sampler conditions on."""
        if self.text:
            if class_ is not None:
                self.class_index(class_)  # its error: a text bundle takes a prompt
            return self.text_embeddings(n, prompt)
        if prompt is not None:
            kind = "class-conditional: give --class NAME" if self.conditional else "unconditional"
            raise ConfigError(f"{self.bundle.path}: this {self.method} is not text-conditioned ({kind}); "
                              "leave out --prompt")
        return self._labels(n, class_)

    def _labels(self, n: int, class_: str | int | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        index = self.class_index(class_)
        if index is None:
            return torch.arange(n) % len(self.classes)
        return torch.full((n,), index, dtype=torch.long)

    def _options(self, steps: int | None, guidance: float | None, sampler: str | None, temperature: float,
                 top_k: int | None) -> SampleOptions:
        s = self.config.get("sampling", {})
        steps = int(steps if steps is not None else s.get("steps", 50))
        limit = min(MAX_STEPS, int(self.net.get("scheduler", {}).get("num_train_timesteps", MAX_STEPS)))
        if not 1 <= steps <= limit:
            raise ConfigError(f"--steps must be in 1..{limit}, got {steps}")
        if temperature <= 0 or (top_k is not None and top_k < 1):
            raise ConfigError("temperature must be > 0 and top_k >= 1")
        return SampleOptions(steps=steps, guidance=float(guidance if guidance is not None else s.get("guidance", 1.0)),
                             sampler=sampler or s.get("sampler", "ddim"), temperature=temperature, top_k=top_k)

    def check_size(self, img_size: int | None) -> None:
        if img_size is not None and img_size != self.img_size:
            raise ConfigError(f"{self.bundle.path}: this {self.method} makes {self.img_size} px images, "
                              f"not {img_size} px")

    @torch.no_grad()
    def generate_tensor(self, n: int, class_: str | int | None = None, steps: int | None = None,
                        guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                        temperature: float = 1.0, top_k: int | None = None, batch_size: int = BATCH_DRAW,
                        prompt: str | Sequence[str] | None = None) -> torch.Tensor:
        """-> (n, C, H, W) float in [-1, 1]; labels cycle through the classes when ``class_`` is None.

        A text-conditioned bundle needs ``prompt``: one text for all ``n`` images, or ``n`` texts.
        """
        if self.spec.sample is None:
            raise BundleError(f"{self.bundle.path}: {self.spec.no_sample_hint}")
        if not 1 <= n <= MAX_SAMPLES:
            raise ConfigError(f"--n must be in 1..{MAX_SAMPLES}, got {n}")
        options = self._options(steps, guidance, sampler, temperature, top_k)
        labels = self._condition(n, class_, prompt)
        generator = torch.Generator().manual_seed(int(seed))
        chunks = []
        for start in range(0, n, batch_size):
            part = None if labels is None else labels[start: start + batch_size]
            size = min(batch_size, n - start)
            chunks.append(self.spec.sample(self.model, self.net, size, part, options, generator).cpu())
        return torch.cat(chunks)

    def generate(self, n: int, class_: str | int | None = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, **kwargs) -> np.ndarray:
        """``n`` images as (n, H, W, C) uint8; the same arguments and seed give the same images."""
        return to_uint8(self.generate_tensor(n, class_, steps, guidance, seed, **kwargs))

    def check_call(self, n: int, class_: str | int | None = None, steps: int | None = None,
                   guidance: float | None = None, prompt: str | Sequence[str] | None = None) -> None:
        """Raise the ``ConfigError`` that ``generate`` would for these arguments, without sampling."""
        if not 1 <= n <= MAX_SAMPLES:
            raise ConfigError(f"--n must be in 1..{MAX_SAMPLES}, got {n}")
        self._options(steps, guidance, None, 1.0, None)
        self._condition(1, class_, prompt)

    def batchable(self) -> bool:
        """Whether several ``generate`` calls can share one sampler call: the method draws all of its
        randomness up front, as latents from each call's own seed (GAN, VAE, and diffusion with a
        deterministic sampler: DDIM, DPM-Solver), so one call's images do not depend on the others'.
        DDPM draws noise at every step and a VQ-VAE prior at every token: those run one call at a time."""
        if self.spec.sample is None or self.spec.random_latent is None or self.spec.decode is None:
            return False
        return self.method != "diffusion" or self.config.get("sampling", {}).get("sampler", "ddim") != "ddpm"

    @torch.no_grad()
    def generate_together(self, calls: Sequence[dict]) -> list[np.ndarray]:
        """Several ``generate`` calls (dicts of ``n``, ``class_``, ``prompt``, ``seed``, and ``steps`` and
        ``guidance``, the same for all) as one sampler call, when :meth:`batchable`; else one by one.

        Each call's latents come from its own seed exactly as ``generate`` draws them, so each answer
        is that call's ``generate`` images, up to the float rounding of a larger batch (within one
        8-bit level).
        """
        if len(calls) == 1 or not self.batchable() or any(c["n"] > BATCH_DRAW for c in calls):
            return [self.generate(c["n"], c.get("class_"), c.get("steps"), c.get("guidance"), c.get("seed", 0),
                                  prompt=c.get("prompt")) for c in calls]
        first = calls[0]
        if any((c.get("steps"), c.get("guidance")) != (first.get("steps"), first.get("guidance")) for c in calls):
            raise ValueError("generate_together: the calls must share steps and guidance")
        options = self._options(first.get("steps"), first.get("guidance"), None, 1.0, None)
        latents, conditions = [], []
        for c in calls:
            if not 1 <= c["n"] <= MAX_SAMPLES:
                raise ConfigError(f"--n must be in 1..{MAX_SAMPLES}, got {c['n']}")
            conditions.append(self._condition(c["n"], c.get("class_"), c.get("prompt")))
            generator = torch.Generator().manual_seed(int(c.get("seed", 0)))
            latents.append(self.spec.random_latent(self.model, self.net, c["n"], generator))
        labels = None if conditions[0] is None else torch.cat(conditions)
        latents = torch.cat(latents)
        parts = []  # at most BATCH_DRAW images per sampler call, as generate_tensor bounds its memory
        for start in range(0, len(latents), BATCH_DRAW):
            part = None if labels is None else labels[start: start + BATCH_DRAW]
            parts.append(self.spec.decode(self.model, self.net, latents[start: start + BATCH_DRAW], part, options).cpu())
        return [to_uint8(images) for images in torch.cat(parts).split([c["n"] for c in calls])]

    @torch.no_grad()
    def interpolate(self, frames: int = 8, images: Sequence | None = None, class_: str | int | None = None,
                    seed: int = 0, steps: int | None = None, guidance: float | None = None,
                    prompt: str | None = None) -> np.ndarray:
        """``frames`` images walking the latent space from A to B -> (frames, H, W, C) uint8.

        A and B are two images encoded by the model (ae, vae), or, without images, two latents
        drawn from the prior with ``seed`` (vae, gan; diffusion interpolates the DDIM start noise).
        A text-conditioned diffusion holds ``prompt`` fixed along the walk.
        """
        if not 2 <= frames <= MAX_FRAMES:
            raise ConfigError(f"--frames must be in 2..{MAX_FRAMES}, got {frames}")
        options = self._options(steps, guidance, "ddim", 1.0, None)
        if images:
            if self.spec.encode is None:
                raise ConfigError(f"{self.bundle.path}: a {self.method} cannot encode images; "
                                  "interpolate without images")
            if len(images) != 2:
                raise ConfigError(f"interpolate takes two images (A and B), got {len(images)}")
            tf = generator_transform(self.img_size)
            mode = "RGB" if self.channels == 3 else "L"
            x = torch.stack([tf(im) for im in load_images(images, mode)]).to(self.device)
            a, b = self.spec.encode(self.model, x).cpu()
            walk = [(1 - t) * a + t * b for t in np.linspace(0, 1, frames)]
        else:
            if self.spec.random_latent is None:
                raise ConfigError(f"{self.bundle.path}: a {self.method} has no prior latent; "
                                  "pass two images to interpolate")
            a, b = self.spec.random_latent(self.model, self.net, 2, torch.Generator().manual_seed(int(seed)))
            walk = [slerp(a, b, float(t)) for t in np.linspace(0, 1, frames)]
        labels = self._condition(1, class_, prompt)
        if self.text:
            labels = labels.expand(frames, -1)
        elif labels is not None:
            labels = labels.expand(frames) if class_ is not None else torch.zeros(frames, dtype=torch.long)
        out = self.spec.decode(self.model, self.net, torch.stack(walk), labels, options)
        return to_uint8(out)

    def predict(self, images: Sequence, top_k: int = 5, names: Sequence[str] | None = None) -> list[dict]:
        raise BundleError(f"{self.bundle.path}: {generator_predict_hint(self.bundle.path)}")


def generator_predict_hint(path: str | Path) -> str:
    return (f"a generator makes images rather than predicting on them; use: omnivis generate {path} --n 16 "
            f"--out samples.png (or omnivis eval {path} for FID/KID)")


def predictor_for_predict(path: str | Path):
    """What ``omnivis predict`` gets from the registry for a generator bundle: a clear error."""
    raise BundleError(f"{path}: {generator_predict_hint(path)}")
