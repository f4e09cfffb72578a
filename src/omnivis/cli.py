"""The ``omnivis`` command: typer commands over the Python API.

Every command maps its options onto a task's config dataclass or an API function; user errors
(``OmnivisError``) print one red line and exit 2, with the traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from omnivis.errors import OmnivisError

app = typer.Typer(
    name="omnivis",
    help="One vision backbone: pretrain, train, probe, distill, evaluate and predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model for a task.", no_args_is_help=True)
datasets_app = typer.Typer(help="Built-in datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Backbones (timm models and omnivis presets).", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)


# The engine options every train command shares (TrainerConfig fields), declared once so that their
# names, defaults and help agree across commands: `name: Alias = default` in a command's signature.
Accelerator = Annotated[str, typer.Option(help="auto | cpu | gpu | mps.")]
Devices = Annotated[str, typer.Option(help="Devices per node: auto or a number.")]
Strategy = Annotated[str, typer.Option(help="auto | ddp | ddp_spawn | fsdp.")]
NumNodes = Annotated[int, typer.Option(help="Machines taking part (launch one process per node).")]
Precision = Annotated[str, typer.Option(help="auto | 32-true | bf16-mixed | 16-mixed.")]
TrainSeed = Annotated[int, typer.Option("--seed", help="Seeds data order, augmentation and the weights.")]
Deterministic = Annotated[bool, typer.Option("--deterministic", help="Deterministic kernels only.")]
CheckpointEvery = Annotated[int, typer.Option(help="Also checkpoint every N steps (0: per epoch).")]
Patience = Annotated[int, typer.Option(help="Early-stopping patience in validations (0: off).")]
Workers = Annotated[int, typer.Option(help="Data-loading worker processes.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint "
                                                       "(its run_config.json decides the other options).")]


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """omnivis: one vision backbone, one CLI, one bundle format."""


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress and results, not Lightning's banner lines."""
    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import; override after)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    warnings.filterwarnings("ignore", message=".*Total length of .* across ranks is zero.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # a frozen teacher or backbone


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@train_app.command("classify")
def train_classify(
    data: str = typer.Option("builtin:digits", help="Class folders, builtin:NAME or torchvision:NAME:ROOT."),
    out: Path = typer.Option(..., help="Run folder; becomes the bundle."),
    model: str = typer.Option("omnivis_resnet_tiny", help="Any timm model name or omnivis preset."),
    img_size: int = typer.Option(32, help="Square input size in pixels."),
    channels: int = typer.Option(3, help="3 for RGB, 1 for grayscale."),
    epochs: int = typer.Option(10, help="Passes over the training data."),
    max_steps: int = typer.Option(-1, help="Stop after this many steps (-1: no limit)."),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(2e-3, help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(0.05),
    label_smoothing: float = typer.Option(0.1),
    val_fraction: float = typer.Option(0.2, help="Held-out fraction (stratified)."),
    manifest: Optional[Path] = typer.Option(None, help="CSV with path,label rows instead of class folders."),
    augment: str = typer.Option("light", help="none | light | randaugment | trivialaugment."),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip", help="Random horizontal flips."),
    rotation: float = typer.Option(0.0, help="Max random rotation (degrees)."),
    color_jitter: float = typer.Option(0.0, help="Color jitter strength."),
    scale_min: float = typer.Option(0.8, help="Smallest random-resized-crop area."),
    mixup: float = typer.Option(0.0, help="Mixup alpha (0: off)."),
    cutmix: float = typer.Option(0.0, help="CutMix alpha (0: off)."),
    init_from: Optional[Path] = typer.Option(None, help="Bundle or safetensors file to start the backbone from."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train only the head."),
    unfreeze_after: int = typer.Option(0, help="With --freeze-backbone: train everything from this epoch on."),
    layer_decay: float = typer.Option(1.0, help="Layer-wise LR decay (e.g. 0.75 for ViT fine-tuning; 1: off)."),
    resume: Resume = False,
    accelerator: Accelerator = "auto",
    devices: Devices = "auto",
    strategy: Strategy = "auto",
    num_nodes: NumNodes = 1,
    precision: Precision = "auto",
    seed: TrainSeed = 0,
    deterministic: Deterministic = False,
    checkpoint_every: CheckpointEvery = 0,
    patience: Patience = 0,
    workers: Workers = 0,
    strict: bool = typer.Option(False, "--strict", help="Unreadable images are an error, not skipped."),
    progress: Progress = True,
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train an image classifier; the --out folder becomes a bundle.

    With --resume, the run's own run_config.json is used and the other options are ignored.
    """
    from omnivis.data.transforms import AugmentConfig
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, train_classifier
    from omnivis.tasks.common import load_run_config

    if resume:
        config = load_run_config(ClassifyConfig, out)
        config.trainer.progress = progress and not as_json
        _train_and_report(train_classifier, config, out, resume, as_json)
        return

    config = ClassifyConfig(
        data=data, manifest=str(manifest) if manifest else None, strict=strict, val_fraction=val_fraction,
        model=model, img_size=img_size, channels=channels, init_from=str(init_from) if init_from else None,
        freeze_backbone=freeze_backbone, unfreeze_after=unfreeze_after, layer_decay=layer_decay,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, label_smoothing=label_smoothing,
        augment=AugmentConfig(
            preset=augment, hflip=hflip, rotation=rotation, color_jitter=color_jitter, scale_min=scale_min,
            mixup=mixup, cutmix=cutmix,
        ),
        trainer=TrainerConfig(
            epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
            num_nodes=num_nodes, precision=precision, seed=seed, deterministic=deterministic,
            checkpoint_every_n_steps=checkpoint_every, early_stopping_patience=patience, num_workers=workers,
            progress=progress and not as_json,
        ),
    )
    _train_and_report(train_classifier, config, out, resume, as_json)


@app.command("pretrain")
def pretrain_command(
    method: str = typer.Option("simclr", help="simclr | dino | rotation | mae (ViT backbones)."),
    data: str = typer.Option("builtin:digits", help="Images (labels ignored): folder, builtin:NAME, torchvision:NAME:ROOT."),
    out: Path = typer.Option(..., help="Run folder; becomes a pretrain bundle any task can --init-from."),
    model: Optional[str] = typer.Option(None, help="Backbone (default: omnivis_resnet_tiny, omnivis_vit_tiny for mae)."),
    img_size: int = typer.Option(32),
    channels: int = typer.Option(3, help="3 for RGB, 1 for grayscale."),
    epochs: int = typer.Option(20),
    max_steps: int = typer.Option(-1),
    max_images: Optional[int] = typer.Option(None, help="Use a seeded random subset of this many images."),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(0.05),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip"),
    crop_scale: float = typer.Option(0.2, help="Smallest crop area of the simclr/dino views."),
    temperature: float = typer.Option(0.5, help="NT-Xent temperature (simclr)."),
    momentum: float = typer.Option(0.996, help="Starting teacher EMA momentum (dino)."),
    local_crops: int = typer.Option(0, help="Extra small crops per image (dino multi-crop)."),
    mask_ratio: float = typer.Option(0.75, help="Fraction of patches hidden (mae)."),
    resume: Resume = False,
    accelerator: Accelerator = "auto",
    devices: Devices = "auto",
    strategy: Strategy = "auto",
    num_nodes: NumNodes = 1,
    precision: Precision = "auto",
    seed: TrainSeed = 0,
    checkpoint_every: CheckpointEvery = 0,
    workers: Workers = 0,
    strict: bool = typer.Option(False, "--strict"),
    progress: Progress = True,
    as_json: bool = typer.Option(False, "--json", help="Print the run's metrics as JSON."),
) -> None:
    """Self-supervised pretraining of a backbone on unlabeled images."""
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.common import load_run_config
    from omnivis.tasks.pretrain import PretrainConfig, pretrain

    if resume:
        config = load_run_config(PretrainConfig, out)
        config.trainer.progress = progress and not as_json
    else:
        config = PretrainConfig(
            data=data, max_images=max_images, strict=strict, method=method, model=model, img_size=img_size,
            channels=channels, batch_size=batch_size, lr=lr, weight_decay=weight_decay, hflip=hflip,
            crop_scale=crop_scale, temperature=temperature, momentum=momentum, local_crops=local_crops,
            mask_ratio=mask_ratio,
            trainer=TrainerConfig(
                epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
                num_nodes=num_nodes, precision=precision, seed=seed, checkpoint_every_n_steps=checkpoint_every,
                num_workers=workers, progress=progress and not as_json,
            ),
        )
    bundle = pretrain(config, out, resume=resume)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    metrics = json.loads((bundle / "metrics.json").read_text())
    if as_json:
        _print_json({"bundle": str(bundle), **metrics})
        return
    _metrics_table(f"{config.method} pretraining", metrics)
    console.print(f"bundle: [bold]{bundle}[/]; use it with --init-from, or measure it with: omnivis probe {bundle}")


@app.command("probe")
def probe_command(
    model: str = typer.Argument(..., help="A bundle folder, or a backbone name (random initialization baseline)."),
    data: str = typer.Option("builtin:digits", help="Labelled data: folder, builtin:NAME, torchvision:NAME:ROOT."),
    shots: Optional[int] = typer.Option(None, help="Also report K-shot accuracy (K labelled images per class)."),
    draws: int = typer.Option(5, help="Random draws of the K shots (mean and spread are reported)."),
    val_fraction: float = typer.Option(0.3, help="Held-out fraction (stratified, --seed)."),
    seed: int = typer.Option(0),
    img_size: Optional[int] = typer.Option(None, help="For a backbone name (default 32); bundles use their own."),
    channels: Optional[int] = typer.Option(None, help="For a backbone name (default 3); bundles use their own."),
    knn_k: int = typer.Option(20, help="Neighbours for the kNN probe."),
    raw_pixels: bool = typer.Option(False, "--raw-pixels", help="Also report the raw-pixel logistic-regression baseline."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Frozen-feature quality: kNN, linear-probe and K-shot accuracy on a held-out split."""
    from omnivis.tasks.probe import probe, raw_pixel_baseline

    result = probe(model, data, shots=shots, draws=draws, val_fraction=val_fraction, seed=seed, img_size=img_size,
                   channels=channels, knn_k=knn_k, progress=not as_json)
    rows = {"features": result}
    if raw_pixels:
        rows["raw pixels"] = raw_pixel_baseline(data, val_fraction=val_fraction, seed=seed, shots=shots, draws=draws,
                                                knn_k=knn_k)
    if as_json:
        _print_json(rows if raw_pixels else result)
        return
    table = Table("features", "kNN", "linear", f"{shots}-shot (mean ± std)" if shots else "k-shot",
                  title=f"probe on {data}: {result['num_train']} train / {result['num_test']} test images")
    for name, r in rows.items():
        kshot = f"{r['kshot_accuracy_mean']:.4f} ± {r['kshot_accuracy_std']:.4f}" if shots else "-"
        label = f"{model}" if name == "features" else name
        table.add_row(label, f"{r['knn_accuracy']:.4f}", f"{r['linear_accuracy']:.4f}", kshot)
    console.print(table)


@app.command("distill")
def distill_command(
    teacher: Path = typer.Option(..., help="A trained classify bundle."),
    student: str = typer.Option("omnivis_resnet_micro", help="The student's backbone (any timm name or preset)."),
    out: Path = typer.Option(..., help="Run folder; becomes the student's bundle."),
    data: Optional[str] = typer.Option(None, help="Training data (default: the teacher's)."),
    epochs: int = typer.Option(10),
    max_steps: int = typer.Option(-1),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(3e-3),
    temperature: float = typer.Option(4.0, help="Softmax temperature of the soft targets."),
    alpha: float = typer.Option(0.9, help="Weight of the distillation term (1 - alpha: labels)."),
    feature_weight: float = typer.Option(0.0, help="Weight of pooled-feature matching (0: off)."),
    val_fraction: float = typer.Option(0.3, help="Held-out fraction on which both models are compared."),
    augment: str = typer.Option("light"),
    hflip: bool = typer.Option(True, "--hflip/--no-hflip"),
    rotation: float = typer.Option(0.0),
    scale_min: float = typer.Option(0.8),
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
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Distill a classifier bundle into a smaller student; compares accuracy, size and CPU latency."""
    from omnivis.data.transforms import AugmentConfig
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.common import load_run_config
    from omnivis.tasks.distill import DistillConfig, distill

    if resume:
        config = load_run_config(DistillConfig, out)
        config.trainer.progress = progress and not as_json
    else:
        config = DistillConfig(
            teacher=str(teacher), model=student, batch_size=batch_size, lr=lr, temperature=temperature, alpha=alpha,
            feature_weight=feature_weight, val_fraction=val_fraction,
            augment=AugmentConfig(preset=augment, hflip=hflip, rotation=rotation, scale_min=scale_min),
            trainer=TrainerConfig(
                epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
                num_nodes=num_nodes, precision=precision, seed=seed, checkpoint_every_n_steps=checkpoint_every,
                num_workers=workers, progress=progress and not as_json,
            ),
        )
        if data:
            config.data = data
    bundle = distill(config, out, resume=resume)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return
    report = json.loads((bundle / "distill_report.json").read_text())
    if as_json:
        _print_json({"bundle": str(bundle), **report})
        return
    console.print((bundle / "distill_report.md").read_text())
    console.print(f"student bundle: [bold]{bundle}[/]")


def _train_and_report(train, config, out: Path, resume: bool, as_json: bool) -> None:
    bundle = train(config, out, resume=resume)
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    metrics = json.loads((bundle / "metrics.json").read_text())
    if as_json:
        _print_json({"bundle": str(bundle), **metrics})
        return
    _metrics_table("validation", metrics)
    console.print(f"bundle: [bold]{bundle}[/]  (logs: {bundle / 'logs'}, checkpoints: {bundle / 'checkpoints'})")


def _format_number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _metrics_table(title: str, metrics: dict) -> None:
    table = Table(title=title, show_header=False)
    for key, value in metrics.items():
        if isinstance(value, (int, float)):
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command("eval")
def eval_command(
    bundle: Path = typer.Argument(..., help="A bundle folder."),
    data: Optional[str] = typer.Option(None, help="Labelled data (default: the bundle's training data)."),
    split: str = typer.Option("auto", help="auto | val | all (auto: the held-out split of the training data)."),
    out: Optional[Path] = typer.Option(None, help="Folder for eval.json and the confusion matrix (default: the bundle)."),
    strict: bool = typer.Option(False, "--strict"),
    reference: Optional[Path] = typer.Option(
        None, help="Generators: the classifier bundle whose features score FID/KID (default: the one recorded at training)."
    ),
    inception_weights: Optional[Path] = typer.Option(
        None, help="Generators: also the standard Inception-v3 FID/KID, from this .safetensors weights file."
    ),
    num_samples: Optional[int] = typer.Option(
        None, min=2, help="Generators: how many generated (and real) images FID/KID compare (default 500)."
    ),
    per_class: Optional[int] = typer.Option(
        None, min=1, help="Generators: samples per class for the class-accuracy check (default 50)."
    ),
    images: Optional[Path] = typer.Option(None, help="Detection, multitask: the image folder of a COCO --data file."),
    labels: Optional[Path] = typer.Option(None, help="Multitask: a path,label CSV of image-level classes for --data."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Evaluate a bundle on labelled data with its task's metrics (accuracy, mAP, mIoU, FID ...)."""
    from omnivis.engine.bundle import load_bundle
    from omnivis.metrics.report import write_json
    from omnivis.tasks.registry import get_task

    task = get_task(load_bundle(bundle).task)
    out_dir = out or bundle
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    extra = {}
    import inspect

    options = (("reference", reference, "generator"), ("inception_weights", inception_weights, "generator"),
               ("num_samples", num_samples, "generator"), ("per_class", per_class, "generator"),
               ("images", images, "detection and multitask"), ("labels", labels, "multitask"))
    for option, value, kind in options:
        if value is None:
            continue
        if option not in inspect.signature(task.evaluate).parameters:
            flag = "--" + option.replace("_", "-")
            raise OmnivisError(f"{flag} applies to {kind} bundles; {bundle} is a '{task.name}' bundle")
        extra[option] = value if isinstance(value, int) else str(value)
    metrics = task.evaluate(bundle, data=data, split=split, out_dir=out_dir, strict=strict, progress=not as_json, **extra)
    write_json(metrics, Path(out_dir) / "eval.json")
    if as_json:
        _print_json(metrics)
        return
    _metrics_table(f"{task.name} on {metrics.get('data', data)}", metrics)
    per_class = metrics.get("per_class", {})
    if per_class and all(isinstance(row, dict) for row in per_class.values()):
        # whatever numbers the task reports per class (P/R/F1, AP, IoU/Dice, accuracy), one column each
        columns = [k for k in next(iter(per_class.values())) if isinstance(next(iter(per_class.values()))[k], (int, float))]
        table = Table("class", *columns, title="per class")
        for name, row in per_class.items():
            table.add_row(str(name), *(_format_number(row.get(c)) for c in columns))
        console.print(table)
    pictures = [str(v) for k, v in metrics.items() if k.endswith("_png") and v]
    console.print(f"wrote {Path(out_dir) / 'eval.json'}" + (f" and {', '.join(pictures)}" if pictures else ""))


@app.command("predict")
def predict_command(
    bundle: Path = typer.Argument(..., help="A bundle folder."),
    inputs: List[Path] = typer.Argument(..., help="Images or folders of images."),
    top_k: int = typer.Option(5, "--top-k", help="How many classes to list per image (classifiers)."),
    out: Optional[Path] = typer.Option(
        None, help="Folder for drawn predictions (boxes, masks, overlays) where the task makes pictures."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON."),
) -> None:
    """Predict with a bundle on images or folders.

    Every task's predictor returns one JSON-ready dict per image; tasks whose answers are pictures
    (detection, segmentation) also draw them into --out (default: BUNDLE/predictions).
    """
    from omnivis.engine.bundle import load_bundle
    from omnivis.tasks.common import expand_image_paths
    from omnivis.tasks.registry import get_task

    if top_k < 1:
        raise OmnivisError(f"--top-k must be >= 1, got {top_k}")
    task = get_task(load_bundle(bundle).task)
    predictor = task.predictor(bundle)
    paths = expand_image_paths(inputs)
    results = predictor.predict(paths, top_k=top_k, names=[str(p) for p in paths])
    drawn: list[Path] = []
    if hasattr(predictor, "save_visualizations"):
        drawn = predictor.save_visualizations(paths, results, out or Path(bundle) / "predictions")
    if as_json:
        _print_json(results)
        return
    if results and "top_k" in results[0]:
        table = Table("image", "prediction", "score", f"top-{top_k}")
        table.columns[0].overflow = "fold"
        for r in results:
            others = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["top_k"])
            table.add_row(r["image"], r["label"], f"{r['score']:.3f}", others)
    else:  # every non-classification predictor gives each result a one-line "summary"
        table = Table("image", "prediction")
        table.columns[0].overflow = "fold"
        for r in results:
            table.add_row(r["image"], str(r.get("summary", "")))
    console.print(table)
    if drawn:
        console.print(f"drawn predictions: [bold]{Path(drawn[0]).parent}[/] ({len(drawn)} files)")


@datasets_app.command("list")
def datasets_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the built-in datasets (use them as --data builtin:NAME)."""
    from omnivis.data.builtin import list_builtin

    rows = [{"name": f"builtin:{d.name}", "tasks": list(d.tasks), "description": d.description} for d in list_builtin()]
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "tasks", "description", title="built-in datasets")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["tasks"]), r["description"])
    console.print(table)
    console.print("Folders of class sub-folders and torchvision:NAME:ROOT (CIFAR10, MNIST, ...) work too.")


@models_app.command("list")
def models_list(
    pattern: Optional[str] = typer.Argument(None, help="Shell-style pattern, e.g. 'resnet*'."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List backbones: omnivis presets first, then every matching timm model."""
    from omnivis.models.backbones import PRESETS, list_backbones

    names = list_backbones(pattern)
    if as_json:
        _print_json(names)
        return
    table = Table("backbone", "note", title=f"{len(names)} backbones" + (f" matching '{pattern}'" if pattern else ""))
    for name in names:
        table.add_row(name, PRESETS.get(name, "timm"))
    console.print(table)


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("omnivis-demo"), help="Where the demo writes its bundle and report."),
    epochs: int = typer.Option(15, help="Training epochs on digits."),
) -> None:
    """Train, evaluate and predict on built-in digits, then write an HTML report."""
    from omnivis.demo import run_demo

    report = run_demo(out, epochs=epochs, console=console)
    console.print(f"\n[bold green]demo finished[/]: report at [bold]{report}[/]")


# Each task family keeps its commands in omnivis/commands/<family>.py (they register on the apps
# above when imported), so cli.py stays a readable table of contents.
from omnivis.commands import register_all  # noqa: E402

register_all()


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line."""
    debug = "--debug" in sys.argv
    if len(sys.argv) > 1 and not {"--help", "-h"} & set(sys.argv[1:]):
        _quiet_libraries()  # imports Lightning (seconds); help pages do not need it
    try:
        app(standalone_mode=True)
    except OmnivisError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; resume a training run with --resume")
        sys.exit(130)


if __name__ == "__main__":
    # `python -m omnivis.cli` runs this file as __main__, a second copy of the module; the family
    # commands registered themselves on the importable omnivis.cli, so run that one
    from omnivis.cli import main as _main

    _main()
