"""``omnivis train segment``: semantic segmentation (smp decoders on any backbone) or, with
``--kind instance``, Mask R-CNN through the detection task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omnivis.commands._shared import AsJson, ConfigFile, Resume, train_and_report
from omnivis.commands.options import (
    build_config,
    config_command,
    config_defaults,
    config_options,
    finish_config,
    flag_names,
    given_values,
    merge,
    option_values,
    read_config_file,
    resume_config,
    set_value,
)
from omnivis.errors import ConfigError

CONFIG = "omnivis.tasks.segment:SegmentConfig"
KINDS = ("semantic", "instance")

# --kind instance fills a DetectConfig (arch maskrcnn): SegmentConfig field -> DetectConfig field.
# These (and every trainer option) always carry over, defaults included; INSTANCE_IF_GIVEN only when given.
INSTANCE_ALWAYS = {"data": "data", "model": "model", "img_size": "img_size", "init_from": "init_from"}
INSTANCE_IF_GIVEN = {"channels": "channels", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                     "warmup_epochs": "warmup_epochs", "val_fraction": "val_fraction", "strict": "strict",
                     "train_images": "num_train", "val_images": "num_test", "augment.hflip": "hflip",
                     "augment.scale_min": "scale_min"}


def train_segment(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run folder; becomes the bundle.")],
    kind: Annotated[str, typer.Option(help="semantic (one class per pixel) | instance (Mask R-CNN, a detect bundle).")]
    = "semantic",
    config_file: ConfigFile = None,
    resume: Resume = False,
    as_json: AsJson = False,
) -> None:
    """Train a segmentation model; the --out folder becomes a bundle.

    Every SegmentConfig field is an option; --config starts from a YAML or JSON file of them.

    --kind instance trains Mask R-CNN: a DetectConfig with arch maskrcnn (--config then takes a DetectConfig).

    With --resume, the run's own run_config.json decides and the other options are ignored.
    """
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if kind == "instance":
        _train_instance(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
        return
    from omnivis.tasks.segment import train_segmenter

    config = build_config(ctx, out=out, resume=resume, config_file=config_file, as_json=as_json)
    train_and_report(train_segmenter, config, out, resume, as_json)


def _train_instance(ctx: typer.Context, *, out: Path, resume: bool, config_file: Path | None, as_json: bool) -> None:
    """Mask R-CNN lives in the detection task; this maps the segment options onto its config."""
    try:
        from omnivis.tasks.detect import DetectConfig, train_detector
    except ImportError:
        raise ConfigError("instance segmentation (Mask R-CNN) is not available in this build; "
                          "use omnivis train detect --arch maskrcnn") from None

    if resume:
        config = resume_config(ctx, DetectConfig, out=out, config_file=config_file, as_json=as_json)
        train_and_report(train_detector, config, out, resume, as_json)
        return
    given = given_values(ctx)
    stray = [o for o in given if o.path[0] != "trainer" and o.key not in INSTANCE_ALWAYS | INSTANCE_IF_GIVEN]
    if stray:
        raise ConfigError(f"{flag_names(stray)} do not apply to --kind instance; for every Mask R-CNN option use "
                          "omnivis train detect --arch maskrcnn")

    def target(key: str) -> tuple[str, ...]:
        mapped = {**INSTANCE_ALWAYS, **INSTANCE_IF_GIVEN}.get(key)
        return (mapped,) if mapped else tuple(key.split("."))

    data = config_defaults(DetectConfig)
    data.update(arch="maskrcnn", images=None)
    for option, value in option_values(ctx).items():
        if option.path[0] == "trainer" or option.key in INSTANCE_ALWAYS:
            set_value(data, target(option.key), value)
    where = "options"
    if config_file is not None:
        merge(data, read_config_file(config_file))
        where = str(config_file)
    for option, value in given.items():
        set_value(data, target(option.key), value)
    if as_json:
        data["trainer"]["progress"] = False
    config = finish_config(DetectConfig, data, config_options(DetectConfig), where)
    train_and_report(train_detector, config, out, resume, as_json)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    train_app.command("segment", cls=config_command(CONFIG))(train_segment)
