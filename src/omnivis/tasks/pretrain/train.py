"""``pretrain``: train a backbone without labels and write a bundle any task can ``--init-from``.

The bundle's ``model.safetensors`` holds the backbone under ``backbone.model.*`` (exactly the keys
of ``create_backbone(...).model``) and the method's other parts (heads, teacher, decoder) under
other names, which ``create_backbone(name, in_chans, pretrained=bundle)`` ignores.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from omnivis.config import config_to_dict
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.cache import cache_datasets
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.profile import profile_images, size_for
from omnivis.data.readers import ClassificationData
from omnivis.data.transforms import build_eval_transform
from omnivis.errors import DataError
from omnivis.tasks.pretrain.config import PretrainConfig
from omnivis.tasks.pretrain.mae import MAE
from omnivis.tasks.pretrain.module import PretrainModule
from omnivis.tasks.pretrain.plots import plot_embeddings, plot_reconstructions
from omnivis.tasks.pretrain.views import build_views
from omnivis.tasks.run import TrainingPlan, run_training

TASK = "pretrain"
EMBEDDING_IMAGES = 500
RECONSTRUCTION_IMAGES = 8


def load_pretrain_data(config: PretrainConfig) -> ClassificationData:
    """The images to pretrain on: unreadable files skipped (with a warning) unless ``strict``;
    a folder without class sub-folders is fine (labels are -1); ``max_images`` keeps a random
    subset fixed by the seed."""
    data = resolve_classification_data(config.data, strict=config.strict)
    if len(data) < 2:
        raise DataError(f"{config.data}: pretraining needs at least 2 readable images, found {len(data)}")
    if config.max_images is not None and len(data) > config.max_images:
        rng = np.random.default_rng(config.trainer.seed)
        data = data.subset(np.sort(rng.choice(len(data), config.max_images, replace=False)))
    return data


def bundle_config(config: PretrainConfig, num_images: int, mean: tuple, std: tuple) -> dict:
    return {
        "task": TASK,
        "backbone": config.model,
        "in_chans": config.channels,
        "img_size": config.img_size,
        "mean": list(mean),
        "std": list(std),
        "method": config.method,
        "data": config.data,
        "num_images": num_images,
        "train_config": config_to_dict(config),
    }


def method_parameters(config: PretrainConfig) -> dict:
    """The settings that define the method, recorded next to its loss."""
    from omnivis.tasks.pretrain.methods import METHOD_SPECS

    return METHOD_SPECS[config.method].parameters(config)


def model_card(config: dict, metrics: dict) -> str:
    """A README saying what the weights are for: initializing other tasks, not predicting."""
    return "\n".join(
        [
            f"# omnivis pretrained backbone ({config['method']})",
            "",
            (f"- backbone: `{config['backbone']}`, {config['in_chans']} channels, {config['img_size']} px, "
            f"mean {config['mean']}, std {config['std']}"),
            f"- self-supervised method: {config['method']} on `{config['data']}` ({config['num_images']} images, labels unused)",
            f"- final training loss: {metrics.get('train_loss', float('nan')):.4f} after {metrics.get('steps', 0)} steps",
            f"- omnivis version: {config.get('omnivis_version', '?')}",
            "",
            "## Use",
            "",
            "The backbone is stored under `backbone.model.*`; start any task from it:",
            "",
            "```bash",
            f"omnivis train classify --model {config['backbone']} --channels {config['in_chans']} --init-from THIS_FOLDER",
            "```",
            "",
            "Or in Python: `create_backbone(name, in_chans, pretrained=THIS_FOLDER)`.",
            "",
        ]
    )


@torch.no_grad()
def _embeddings(module: PretrainModule, dataset: ImageClassificationDataset, indices: np.ndarray, transform) -> np.ndarray:
    backbone = module.method.backbone
    device = next(backbone.parameters()).device
    out = []
    for start in range(0, len(indices), 128):
        batch = torch.stack([transform(dataset.load(int(i))) for i in indices[start : start + 128]]).to(device)
        out.append(backbone.forward_pooled(batch).float().cpu())
    return torch.cat(out).numpy()


def write_pictures(module: PretrainModule, data: ClassificationData, config: PretrainConfig, out: Path,
                   mean: tuple, std: tuple) -> Path:
    """``reconstructions.png`` for mae, else ``embeddings.png`` (PCA of pooled embeddings)."""
    transform = build_eval_transform(config.img_size, mean, std)
    dataset = ImageClassificationDataset(data, transform, config.mode, config.trainer.seed)
    rng = np.random.default_rng(config.trainer.seed)
    module.eval()
    method = module.method
    if isinstance(method, MAE):
        count = min(RECONSTRUCTION_IMAGES, len(data))
        indices = np.sort(rng.choice(len(data), count, replace=False))
        device = next(method.parameters()).device
        images = torch.stack([transform(dataset.load(int(i))) for i in indices]).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.trainer.seed)  # the same masks every time the plot is drawn
            masked, recon = method.reconstruct(images)
        title = f"MAE, {round(100 * config.mask_ratio)}% of patches masked"
        return plot_reconstructions(images, masked, recon, mean, std, out / "reconstructions.png", title)
    count = min(EMBEDDING_IMAGES, len(data))
    indices = np.sort(rng.choice(len(data), count, replace=False))
    embeddings = _embeddings(module, dataset, indices, transform)
    labels = data.labels()[indices]
    title = f"{config.method} embeddings of {count} images (PCA)"
    return plot_embeddings(embeddings, labels, list(data.classes), out / "embeddings.png", title)


def resolve_from_data(config: PretrainConfig, data: ClassificationData) -> tuple[PretrainConfig, tuple, list[str]]:
    """``config`` with channels and size read off the images where it left them None, the mean/std
    measured on them, and one line per choice (flips stay as set: without labels nothing can check
    whether a mirror changes what an image means)."""
    profile = profile_images([s.source for s in data.samples], seed=config.trainer.seed)
    choices = []
    channels, img_size = config.channels, config.img_size
    if channels is None:
        channels = profile.channels
        choices.append(profile.channels_line("images"))
    if img_size is None:
        img_size = size_for(profile.native_size)
        choices.append(f"img_size {img_size}: the images' median shorter side is {profile.native_size} px "
                       "(--img-size to choose)")
    mean, std = profile.stats(channels)
    choices.append(profile.stats_line(channels, "images"))
    return replace(config, channels=channels, img_size=img_size), (mean, std), choices


def pretrain_plan(config: PretrainConfig) -> TrainingPlan:
    """The pretraining run: every image (labels unused) seen through the method's views, no validation."""
    data = load_pretrain_data(config)
    config, (mean, std), choices = resolve_from_data(config, data)
    seed = config.trainer.seed
    dataset = ImageClassificationDataset(data, build_views(config, mean, std), config.mode, seed)
    cached = cache_datasets({"images": dataset}, config.trainer.cache_mb, config.trainer.progress)
    datamodule = SeededDataModule(
        dataset,
        batch_size=min(config.batch_size, len(data)),
        num_workers=config.trainer.num_workers,
        seed=seed,
    )

    def finish(module: PretrainModule, trainer: pl.Trainer) -> dict:
        picture = write_pictures(module, data, config, Path(trainer.default_root_dir), mean, std)
        metrics = {
            "method": config.method,
            "train_loss": module.last_loss,
            "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "num_images": len(data),
            "skipped_images": len(data.skipped),
            **method_parameters(config),
            "picture": picture.name,
        }
        if isinstance(module.method, MAE):
            metrics["mask_ratio_realized"] = module.method.num_masked / module.method.num_patches
        return metrics

    return TrainingPlan(
        command="omnivis pretrain",
        datamodule=datamodule,
        build_module=lambda: PretrainModule(config),  # refuses a backbone the method cannot use
        header=bundle_config(config, len(data), mean, std),
        weights=lambda module: module.method.bundle_state_dict(),
        finish=finish,
        skipped=data.skipped,
        card=model_card,
        config=config,
        choices=[*choices, *cached],
    )


def pretrain(
    config: PretrainConfig, out: str | Path, resume: bool = False, callbacks: list[pl.Callback] | None = None
) -> Path:
    """Pretrain ``config.model`` with ``config.method`` and write a ``pretrain`` bundle into ``out``.

    Besides what every run keeps (``run_training``), ``out`` holds ``embeddings.png`` or, for mae,
    ``reconstructions.png``. Returns ``out``.

    Raises:
        ConfigError: a bad config, e.g. mae on a backbone that is not a ViT (before any file is written).
        DataError: fewer than 2 readable images.
        TrainingError: interrupted or a non-finite loss.
    """
    return run_training(pretrain_plan, config, out, resume, callbacks)
