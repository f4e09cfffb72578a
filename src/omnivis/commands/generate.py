"""Image generation commands: ``train generate``, ``generate`` and ``interpolate``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from omnivis.cli import (
    Accelerator,
    CheckpointEvery,
    Devices,
    NumNodes,
    Precision,
    Progress,
    Resume,
    Strategy,
    TrainSeed,
    Workers,
    app,
    console,
    train_app,
    _print_json,
    _train_and_report,
)


@train_app.command("generate")
def train_generate(
    method: str = typer.Option("diffusion", help="ae | vae | vqvae | vqvae-ar | gan | diffusion."),
    data: str = typer.Option("builtin:digits", help="Class folders, builtin:NAME or torchvision:NAME:ROOT."),
    out: Path = typer.Option(..., help="Run folder; becomes the generator bundle."),
    img_size: int = typer.Option(16, help="Image size the model makes: 8, 16, 32, 64 ..."),
    channels: int = typer.Option(1, help="1 for grayscale, 3 for RGB."),
    conditional: bool = typer.Option(False, "--conditional", help="Condition on the class label."),
    width: int = typer.Option(32, help="Base channel width of the nets (multiple of 8)."),
    latent_dim: int = typer.Option(32, help="ae/vae latent size; GAN z size."),
    kl_weight: float = typer.Option(1.0, help="vae KL weight."),
    codebook_size: int = typer.Option(64, help="vqvae codebook entries."),
    vq_bundle: Optional[Path] = typer.Option(None, help="vqvae-ar: the trained vqvae bundle."),
    cfg_dropout: float = typer.Option(0.1, help="diffusion: label dropout for classifier-free guidance."),
    ema_decay: float = typer.Option(0.999, help="EMA of the saved weights (diffusion, gan; 0: off)."),
    sampler: str = typer.Option("ddim", help="diffusion default sampler: ddim | dpm | ddpm."),
    sample_steps: int = typer.Option(50, help="diffusion default sampling steps."),
    guidance: float = typer.Option(1.25, help="diffusion default guidance scale (conditional; 1: off)."),
    reference: Optional[Path] = typer.Option(None, help="Classifier bundle for FID/KID (evaluated after training)."),
    val_fraction: float = typer.Option(0.2, help="Held-out images evaluation compares with."),
    epochs: int = typer.Option(10),
    max_steps: int = typer.Option(-1, help="Stop after this many optimizer steps (gan: 2 per batch)."),
    batch_size: int = typer.Option(64),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default: the method's)."),
    hflip: bool = typer.Option(False, "--hflip", help="Random horizontal flips."),
    resume: Resume = False,
    accelerator: Accelerator = "auto",
    devices: Devices = "auto",
    strategy: Strategy = "auto",
    num_nodes: NumNodes = 1,
    precision: Precision = "auto",
    seed: TrainSeed = 0,
    checkpoint_every: CheckpointEvery = 0,
    workers: Workers = 0,
    progress: Progress = True,
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train an image generator; the --out folder becomes a bundle for omnivis generate / eval."""
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.common import load_run_config
    from omnivis.tasks.generate import GenerateConfig, train_generator

    if resume:
        config = load_run_config(GenerateConfig, out)
        config.trainer.progress = progress and not as_json
    else:
        config = GenerateConfig(
            method=method, data=data, img_size=img_size, channels=channels, conditional=conditional, width=width,
            latent_dim=latent_dim, kl_weight=kl_weight, codebook_size=codebook_size,
            vq_bundle=str(vq_bundle) if vq_bundle else None, cfg_dropout=cfg_dropout, ema_decay=ema_decay,
            sampler=sampler, sample_steps=sample_steps, guidance=guidance,
            reference=str(reference) if reference else None, val_fraction=val_fraction, batch_size=batch_size,
            lr=lr, hflip=hflip,
            trainer=TrainerConfig(
                epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
                num_nodes=num_nodes, precision=precision, seed=seed, checkpoint_every_n_steps=checkpoint_every,
                num_workers=workers, progress=progress and not as_json,
            ),
        )
    _train_and_report(train_generator, config, out, resume, as_json)


@app.command("generate")
def generate_command(
    bundle: Path = typer.Argument(..., help="A generator bundle (omnivis train generate)."),
    n: int = typer.Option(16, "--n", help="How many images (at most 1024)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class name (conditional models; default: cycle)."),
    steps: Optional[int] = typer.Option(None, help="Diffusion sampling steps (default: the bundle's; at most 1000)."),
    guidance: Optional[float] = typer.Option(None, help="Classifier-free guidance scale (default: the bundle's)."),
    sampler: Optional[str] = typer.Option(None, help="Diffusion sampler: ddim | dpm | ddpm."),
    temperature: float = typer.Option(1.0, help="vqvae-ar sampling temperature."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="vqvae-ar: sample among the k likeliest codes."),
    img_size: Optional[int] = typer.Option(None, help="Check the size the model makes (an error if it differs)."),
    seed: int = typer.Option(0, help="The same seed gives the same images."),
    out: Path = typer.Option(Path("samples.png"), help="FILE.png (grid; singles beside it) or a folder."),
    scale: int = typer.Option(4, help="Enlarge the grid by this factor (nearest neighbour)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sample images from a generator bundle: a PNG grid plus each image."""
    from omnivis.tasks.generate import GeneratorPredictor
    from omnivis.tasks.generate.sample import save_images

    gen = GeneratorPredictor.from_dir(bundle)
    gen.check_size(img_size)
    images = gen.generate(n, class_=class_, steps=steps, guidance=guidance, seed=seed, sampler=sampler,
                          temperature=temperature, top_k=top_k)
    paths = save_images(images, out, scale=scale)
    if as_json:
        _print_json({"grid": str(paths[0]), "images": [str(p) for p in paths[1:]], "n": n, "seed": seed})
        return
    console.print(f"{n} images from {gen.method} ({bundle}): grid [bold]{paths[0]}[/], singles beside it")


@app.command("interpolate")
def interpolate_command(
    bundle: Path = typer.Argument(..., help="A latent generator bundle (ae, vae, gan, diffusion)."),
    images: Optional[List[Path]] = typer.Argument(None, help="Two images A and B to encode (ae, vae)."),
    frames: int = typer.Option(8, help="Images along the path (2..64)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class to hold fixed (conditional models)."),
    steps: Optional[int] = typer.Option(None, help="Diffusion DDIM steps."),
    seed: int = typer.Option(0, help="Without images: the two prior latents come from this seed."),
    out: Path = typer.Option(Path("interpolation.png"), help="FILE.png or a folder."),
    scale: int = typer.Option(4),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Walk the latent space between two images (or two random latents) and save the frames."""
    from omnivis.tasks.generate import GeneratorPredictor
    from omnivis.tasks.generate.sample import save_images

    gen = GeneratorPredictor.from_dir(bundle)
    walk = gen.interpolate(frames, images=[str(p) for p in images] if images else None, class_=class_, seed=seed,
                           steps=steps)
    paths = save_images(walk, out, columns=frames, scale=scale)
    if as_json:
        _print_json({"grid": str(paths[0]), "images": [str(p) for p in paths[1:]]})
        return
    console.print(f"{frames} frames: [bold]{paths[0]}[/]")
