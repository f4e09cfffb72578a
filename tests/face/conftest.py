"""Face fixtures: generated "people" (each a distinct blocky pattern, photographed with noise and
small shifts) written as an identity folder, and face bundles made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnivis.data.transforms import AugmentConfig
from omnivis.engine.trainer import TrainerConfig
from omnivis.tasks.face import FaceConfig

PEOPLE = 8
PHOTOS = 8
SIZE = 32


def person_photos(person: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` photos of one generated person: their 4 x 4 pattern (fixed by ``person``) upsampled,
    under another light (a brightness offset) and with pixel noise, both drawn from ``seed``."""
    pattern = np.random.default_rng(1000 + person).integers(30, 226, size=(4, 4)).astype(np.float64)
    face = np.kron(pattern, np.ones((SIZE // 4, SIZE // 4)))
    rng = np.random.default_rng(seed)
    return [np.clip(face + rng.uniform(-15, 15) + rng.normal(0, 12, face.shape), 0, 255).astype(np.uint8)
            for _ in range(count)]


def write_people(root: Path, people: range, photos: int = PHOTOS, seed: int = 0) -> Path:
    """An identity folder: ``root/pNN/k.png``."""
    for person in people:
        folder = root / f"p{person:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, photo in enumerate(person_photos(person, photos, seed * 100 + person)):
            Image.fromarray(photo).save(folder / f"{k}.png")
    return root


def tiny_face_config(data: str, **overrides) -> FaceConfig:
    trainer = dict(epochs=None, max_steps=120, progress=False, seed=0)
    trainer.update(overrides.pop("trainer", {}))
    base = dict(data=data, model="omnivis_resnet_tiny", img_size=SIZE, channels=1, embedding_size=32,
                batch_size=32, flip_test=False, test_identities="p06-p07", augment=AugmentConfig(preset="none", hflip=False))
    base.update(overrides)
    return FaceConfig(**base, trainer=TrainerConfig(**trainer))


@pytest.fixture(scope="package")
def people_folder(tmp_path_factory) -> Path:
    return write_people(tmp_path_factory.mktemp("people"), range(PEOPLE))


@pytest.fixture(scope="package")
def face_bundle(tmp_path_factory, people_folder) -> Path:
    """ArcFace trained 120 steps on people p00-p05 (p06, p07 held out)."""
    from omnivis.tasks.face import train_face

    return train_face(tiny_face_config(str(people_folder)), tmp_path_factory.mktemp("face") / "arcface")


def save_untrained_face_bundle(folder: Path, seed: int = 0, threshold: float | None = 0.5, embedding_size: int = 16,
                               flip_test: bool = False) -> Path:
    """A face bundle with random weights, written in milliseconds: for the tests of galleries and
    their refusals, where what matters is which model made an embedding, not how good it is."""
    import torch

    from omnivis.bundle import save_bundle
    from omnivis.inference.face import CROP_POLICY
    from omnivis.models.backbones import create_backbone
    from omnivis.models.embedding import EmbeddingModel

    torch.manual_seed(seed)
    model = EmbeddingModel(create_backbone("omnivis_resnet_tiny", in_chans=1, img_size=SIZE), embedding_size).eval()
    header = {"task": "face", "backbone": "omnivis_resnet_tiny", "img_size": SIZE, "in_chans": 1, "mean": [0.5],
              "std": [0.5], "data": "generated", "embedding_size": embedding_size,
              "normalization": {"image_mean": [0.5], "image_std": [0.5], "embedding": "l2"},
              "crop": {**CROP_POLICY, "margin": 0.2, "size": SIZE},
              "flip_test": flip_test}
    if threshold is not None:
        header["threshold"] = {"value": threshold, "far": 0.01, "source": "a test"}
    return save_bundle(folder, model.state_dict(), header)
