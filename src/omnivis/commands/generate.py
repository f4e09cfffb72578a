"""Image generation commands: ``train generate``, ``generate`` and ``interpolate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, console, print_json, train_and_report
from omnivis.commands.options import build_config, config_command

CONFIG = "omnivis.tasks.generate.config:GenerateConfig"


def train_generate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the generator bundle.")],
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: AsJson = False,
) -> None:
    """Train an image generator; the --out folder becomes a bundle for omnivis generate / eval.

    Every GenerateConfig field is an option; --config starts from a YAML or JSON file of them.

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    from omnivis.tasks.generate import train_generator

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    train_and_report(train_generator, config, out, resume, as_json)


def generate_command(
    bundle: Path = typer.Argument(..., help="A generator bundle (omnivis train generate)."),
    n: int = typer.Option(16, "--n", help="How many images (at most 1024)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class name (conditional models; default: cycle)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="What to draw (text-conditioned models only)."),
    text_encoder: Optional[str] = typer.Option(
        None, "--text-encoder", help="Text encoder to use instead of the one the bundle recorded (must be the same)."),
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

    gen = GeneratorPredictor.from_dir(bundle, text_encoder=text_encoder)
    gen.check_size(img_size)
    images = gen.generate(n, class_=class_, steps=steps, guidance=guidance, seed=seed, sampler=sampler,
                          temperature=temperature, top_k=top_k, prompt=prompt)
    paths = save_images(images, out, scale=scale)
    if as_json:
        print_json({"grid": str(paths[0]), "images": [str(p) for p in paths[1:]], "n": n, "seed": seed,
                    **({"prompt": prompt} if prompt is not None else {})})
        return
    console.print(f"{n} images from {gen.method} ({bundle}): grid [bold]{paths[0]}[/], singles beside it")


def interpolate_command(
    bundle: Path = typer.Argument(..., help="A latent generator bundle (ae, vae, gan, diffusion)."),
    images: Optional[List[Path]] = typer.Argument(None, help="Two images A and B to encode (ae, vae)."),
    frames: int = typer.Option(8, help="Images along the path (2..64)."),
    class_: Optional[str] = typer.Option(None, "--class", help="Class to hold fixed (conditional models)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Text to hold fixed (text-conditioned models)."),
    text_encoder: Optional[str] = typer.Option(
        None, "--text-encoder", help="Text encoder to use instead of the one the bundle recorded (must be the same)."),
    steps: Optional[int] = typer.Option(None, help="Diffusion DDIM steps."),
    seed: int = typer.Option(0, help="Without images: the two prior latents come from this seed."),
    out: Path = typer.Option(Path("interpolation.png"), help="FILE.png or a folder."),
    scale: int = typer.Option(4),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Walk the latent space between two images (or two random latents) and save the frames."""
    from omnivis.tasks.generate import GeneratorPredictor
    from omnivis.tasks.generate.sample import save_images

    gen = GeneratorPredictor.from_dir(bundle, text_encoder=text_encoder)
    walk = gen.interpolate(frames, images=[str(p) for p in images] if images else None, class_=class_, seed=seed,
                           steps=steps, prompt=prompt)
    paths = save_images(walk, out, columns=frames, scale=scale)
    if as_json:
        print_json({"grid": str(paths[0]), "images": [str(p) for p in paths[1:]]})
        return
    console.print(f"{frames} frames: [bold]{paths[0]}[/]")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("generate", cls=config_command(CONFIG))(train_generate)
    app.command("generate")(generate_command)
    app.command("interpolate")(interpolate_command)
