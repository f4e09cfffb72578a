"""Edit fixtures: folders of small real photo crops (scikit-image's, which ship with it) and tiny
edit bundles trained on them in a few seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.engine.trainer import TrainerConfig
from omnivis.tasks.edit import EditConfig, train_edit


def write_photos(folder: Path, names=("astronaut", "chelsea", "coffee", "rocket"), size: int = 64) -> Path:
    """Crops of scikit-image photos (``size`` px, from the middle) as PNGs in ``folder``."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        photo = np.asarray(getattr(data, name)())
        h, w = photo.shape[:2]
        Image.fromarray(photo[h // 2 - size // 2 : h // 2 + size // 2, w // 2 - size // 2 : w // 2 + size // 2]).save(
            folder / f"{name}.png")
    return folder


def tiny_edit_config(photos: Path, **overrides) -> EditConfig:
    trainer = dict(max_steps=6, epochs=None, progress=False, seed=0, num_workers=0)
    trainer.update(overrides.pop("trainer", {}))
    base = dict(data=str(photos), test_data=str(photos), width=8, blocks=2, crop_size=32, crops_per_image=2,
                batch_size=4)
    base.update(overrides)
    return EditConfig(**base, trainer=TrainerConfig(**trainer))


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def edit_bundles(tmp_path_factory, photo_folder) -> dict[str, Path]:
    """op name -> a bundle trained 6 steps (superres x2, denoise, inpaint, enhance)."""
    root = tmp_path_factory.mktemp("edit-bundles")
    bundles = {}
    for op in ("superres", "denoise", "inpaint", "enhance"):
        bundles[op] = train_edit(tiny_edit_config(photo_folder, op=op), root / op)
    return bundles
