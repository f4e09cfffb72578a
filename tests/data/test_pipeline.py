"""The input pipeline: cache and workers change nothing a model sees; defaults read off the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.data.cache import cache_decoded, fully_decoded, loader_workers
from omnivis.data.datamodule import ImageClassificationDataset, SeededDataModule
from omnivis.data.profile import flip_keeps_labels, profile_images, size_for
from omnivis.data.readers import read_class_folder
from omnivis.data.transforms import AugmentConfig, build_train_transform
from tests.toys import write_arrows


def _mixed_folder(root, n: int = 24):
    """Grey and colour PNGs and JPEGs of different sizes in two classes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(12, 40, size=2)
        if i % 3 == 0:
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(folder / f"{i}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                folder / f"{i}.{'jpg' if i % 3 == 1 else 'png'}")
    return read_class_folder(root)


def _batches(datamodule: SeededDataModule, epochs: int = 2) -> list[torch.Tensor]:
    out = []
    loader = datamodule.train_dataloader()
    for epoch in range(epochs):
        loader.batch_sampler.sampler.set_epoch(epoch)
        out.extend(images for images, _ in loader)
    return out


def _dataset(data, mode: str = "RGB") -> ImageClassificationDataset:
    augment = AugmentConfig(preset="light", hflip=True, rotation=10.0, color_jitter=0.2)
    return ImageClassificationDataset(data, build_train_transform(16, (0.5,) * 3, (0.25,) * 3, augment), mode, seed=5)


def test_cache_and_workers_give_exactly_the_plain_batches(tmp_path):
    data = _mixed_folder(tmp_path)
    plain = _batches(SeededDataModule(_dataset(data), batch_size=5, num_workers=0, seed=5))
    cached_set = _dataset(data)
    report = cache_decoded(cached_set, limit_mb=100, progress=False)
    assert report.complete and report.cached == len(data) and fully_decoded(cached_set)
    cached = _batches(SeededDataModule(cached_set, batch_size=5, num_workers=2, seed=5))
    assert len(plain) == len(cached) == 2 * (len(data) // 5)
    for a, b in zip(plain, cached):
        assert torch.equal(a, b)


@pytest.mark.parametrize("resize", ["random crops", "eval"])
def test_a_batch_read_at_once_is_the_samples_read_one_by_one(tmp_path, resize):
    """``__getitems__`` (one RNG fork, the normalization once on the stacked batch) changes no number."""
    from omnivis.data.transforms import build_eval_transform

    data = _mixed_folder(tmp_path)
    dataset = _dataset(data)
    if resize == "eval":
        dataset.transform = build_eval_transform(16, (0.5,) * 3, (0.25,) * 3)
    keys = [(3, i) for i in range(len(data))]
    together = dataset.__getitems__(keys)
    for key, (image, label) in zip(keys, together):
        single, single_label = dataset[key]
        assert torch.equal(image, single) and label == single_label


def test_decoding_in_worker_processes_gives_the_same_images(tmp_path, monkeypatch):
    monkeypatch.setattr("omnivis.data.cache.PARALLEL_FROM", 4)  # real datasets: from 2,000 images on
    monkeypatch.setattr("omnivis.data.cache.DECODE_CHUNK", 5)
    data = _mixed_folder(tmp_path)
    serial, parallel = _dataset(data), _dataset(data)
    cache_decoded(serial, limit_mb=100, progress=False)
    monkeypatch.setattr("omnivis.data.cache.available_cores", lambda: 2)
    report = cache_decoded(parallel, limit_mb=100, progress=False)
    assert report.complete
    assert all(torch.equal(a, b) for a, b in zip(serial.decoded, parallel.decoded))


def test_a_cache_smaller_than_the_data_streams_the_rest_and_says_so(tmp_path):
    data = _mixed_folder(tmp_path)
    plain = _batches(SeededDataModule(_dataset(data), batch_size=4, seed=5), epochs=1)
    dataset = _dataset(data)
    report = cache_decoded(dataset, limit_mb=0.01, progress=False)  # ~3 of the images fit
    assert 0 < report.cached < len(data) and not report.complete
    assert "decoded each epoch" in report.line() and "cache-mb" in report.line()
    assert all(torch.equal(a, b) for a, b in zip(plain, _batches(SeededDataModule(dataset, batch_size=4, seed=5),
                                                                  epochs=1)))
    off = cache_decoded(_dataset(data), limit_mb=0, progress=False)
    assert off.cached == 0 and "cache off" in off.line()


def test_auto_workers_follow_size_cache_and_cores(monkeypatch):
    monkeypatch.setattr("omnivis.data.cache.available_cores", lambda: 2)

    class Data(list):
        decoded = None

    small, big = Data([0] * 100), Data([0] * 5000)
    assert loader_workers(3, [small]) == 3  # asked for: kept
    assert loader_workers(-1, [small]) == 0  # a short epoch
    assert loader_workers(-1, [big]) == 1  # decoded every epoch: one worker beside the model
    big.decoded = [torch.zeros(1)] * len(big)
    assert loader_workers(-1, [big]) == 0  # all in memory on 2 cores: augmenting costs less than a worker steals
    monkeypatch.setattr("omnivis.data.cache.available_cores", lambda: 16)
    assert loader_workers(-1, [big]) == 8


def test_profile_reads_channels_size_and_statistics(tmp_path):
    mixed = _mixed_folder(tmp_path / "mixed")
    profile = profile_images([s.source for s in mixed.samples])
    assert not profile.grey and profile.channels == 3  # one colour image is enough for RGB
    grey = [np.full((28, 28), 51, np.uint8), np.full((28, 28), 153, np.uint8)]  # values 0.2 and 0.6
    profile = profile_images(grey)
    assert profile.grey and profile.channels == 1 and profile.native_size == 28
    assert profile.stats(1) == ((0.4,), (pytest.approx(0.2, abs=1e-3),))
    assert size_for(28) == 32 and size_for(8) == 32 and size_for(92) == 96 and size_for(250) == 128
    rgb_grey = np.repeat(grey[0][:, :, None], 3, axis=2)  # saved as RGB, grey in content
    assert profile_images([rgb_grey]).grey


@pytest.mark.parametrize(("classes", "flips"), [(("left", "right"), False), (("up", "down"), True)])
def test_flips_stay_off_where_a_mirror_changes_the_class(tmp_path, classes, flips):
    data = read_class_folder(write_arrows(tmp_path, classes, per_class=60))
    check = flip_keeps_labels([s.source for s in data.samples], data.labels(), "L", seed=0)
    assert check.hflip is flips
    assert check.accuracy > 0.9  # the pixels do tell these arrows apart
    if flips:
        assert check.mirrored_accuracy > 0.85
    else:
        assert check.mirrored_accuracy < 0.2 and "changes what the images mean" in check.reason


def test_flip_check_on_one_class_says_there_is_nothing_to_check():
    import torch

    from omnivis.data.profile import flip_check

    check = flip_check([torch.zeros(1, 8, 8, dtype=torch.uint8)] * 6, [0] * 6)
    assert check.hflip and not check.checked
    assert check.reason.startswith("6 sampled images hold one class") and "chance" not in check.reason
