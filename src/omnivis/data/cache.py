"""Decode a dataset's images once into memory, and pick loader workers from the cores.

A 2-core machine decoding 28 x 28 PNGs in the training loop spends about as long per batch on
the files as on the model step (issue 12: ~97 ms vs ~100 ms). Decoded uint8 images are small
(60,000 digits are 47 MB), so every dataset whose decoded images fit under ``cache_mb`` is decoded
once, before training, by several processes; the loader then only augments tensors. A dataset
larger than the limit has its first images cached and the rest decoded each epoch, and the run
says so. Cached or not, an item is ``decode_tensor(source)``: the batches are the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from omnivis.data.decode import decode_tensor

DECODE_CHUNK = 256  # images per worker task: few enough inter-process messages, small enough to stop at the limit
PARALLEL_FROM = 2000  # below this many images, starting worker processes costs more than it saves


@dataclass(frozen=True)
class CacheReport:
    """What ``cache_decoded`` kept: ``cached`` of ``total`` images, ``megabytes`` of uint8 pixels."""

    cached: int
    total: int
    megabytes: float
    seconds: float
    limit_mb: float

    @property
    def complete(self) -> bool:
        return self.cached == self.total

    def line(self, what: str = "images") -> str:
        if self.total == 0:
            return f"no {what} to cache"
        if self.limit_mb <= 0:
            return f"{what}: decoded each epoch (cache off: cache_mb = 0)"
        if self.complete:
            return f"{what}: {self.total} decoded into memory once ({self.megabytes:.1f} MB, {self.seconds:.1f} s)"
        return (f"{what}: {self.cached} of {self.total} cached ({self.megabytes:.1f} MB, the cache_mb limit "
                f"{self.limit_mb:g}); the other {self.total - self.cached} are decoded each epoch "
                "(raise --trainer.cache-mb to keep them all)")


class _Chunks(Dataset):
    """Chunk ``i`` -> the decoded uint8 arrays of its sources (numpy: cheap to send between processes)."""

    def __init__(self, sources: Sequence, mode: str) -> None:
        self.sources, self.mode = sources, mode

    def __len__(self) -> int:
        return (len(self.sources) + DECODE_CHUNK - 1) // DECODE_CHUNK

    def __getitem__(self, chunk: int) -> list[np.ndarray]:
        part = self.sources[chunk * DECODE_CHUNK:(chunk + 1) * DECODE_CHUNK]
        return [decode_tensor(source, self.mode).numpy() for source in part]


def cache_datasets(named: dict, limit_mb: float, progress: bool = True) -> list[str]:
    """``cache_decoded`` each dataset of ``{what: dataset or None}`` in turn, all within one ``limit_mb``
    (the first ones, the training images, come first); the lines that say what was kept."""
    lines, left, full = [], limit_mb, False
    for what, dataset in named.items():
        if dataset is None:
            continue
        if full or (limit_mb > 0 and left <= 0):
            dataset.decoded = [None] * len(dataset.sources())
            lines.append(f"{what}: decoded each epoch (the images above fill the cache_mb limit {limit_mb:g})")
            continue
        report = cache_decoded(dataset, left, progress, what)
        lines.append(replace(report, limit_mb=limit_mb).line(what))  # the lines name the limit the user set
        left -= report.megabytes
        full = limit_mb > 0 and not report.complete
    return lines


def available_cores() -> int:
    """CPU cores this process may use (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _as_is(chunk: list[np.ndarray]) -> list[np.ndarray]:
    return chunk


def _decoded_chunks(sources: Sequence, mode: str, workers: int) -> Iterable[list[np.ndarray]]:
    if workers == 0:
        chunks = _Chunks(sources, mode)
        return (chunks[i] for i in range(len(chunks)))
    # numpy arrays travel through the workers' pipes; tensors would each take a shared-memory file
    return DataLoader(_Chunks(sources, mode), batch_size=None, num_workers=workers, collate_fn=_as_is)


def cache_decoded(dataset, limit_mb: float, progress: bool = True, what: str = "images") -> CacheReport:
    """Fill ``dataset.decoded`` (one uint8 tensor per sample, None past the limit) and report it.

    ``dataset`` has ``sources`` (files or arrays) and ``mode``; decoding uses up to all cores when
    there are enough images to pay for starting processes.
    """
    sources = dataset.sources()
    start = time.perf_counter()
    decoded: list[torch.Tensor | None] = [None] * len(sources)
    used, limit = 0, limit_mb * 1e6
    if limit > 0 and len(sources):
        workers = min(available_cores(), 8) if len(sources) >= PARALLEL_FROM else 0
        chunks = _decoded_chunks(sources, dataset.mode, workers)
        total_chunks = (len(sources) + DECODE_CHUNK - 1) // DECODE_CHUNK
        if progress:
            chunks = track(chunks, total=total_chunks, description=f"decoding {what}", transient=True)
        position = 0
        for arrays in chunks:
            for array in arrays:
                if used + array.nbytes > limit:
                    break
                decoded[position] = torch.from_numpy(array)
                used += array.nbytes
                position += 1
            else:
                continue
            break  # over the limit: the rest stream
    dataset.decoded = decoded
    cached = sum(item is not None for item in decoded)
    return CacheReport(cached, len(sources), used / 1e6, time.perf_counter() - start, limit_mb)


def fully_decoded(dataset) -> bool:
    """Every image of ``dataset`` is in its ``decoded`` cache (datasets without one: False)."""
    decoded = getattr(dataset, "decoded", None)
    return decoded is not None and all(item is not None for item in decoded)


def loader_workers(requested: int, datasets: Sequence) -> int:
    """Loader processes: ``requested`` when >= 0, else (auto) none for fewer than ``PARALLEL_FROM``
    images (a short epoch: starting processes costs more than it saves) or when every image is
    decoded in memory on a machine of two cores or fewer (augmenting small tensors costs less than a
    worker steals from the model's threads); otherwise one per core but one, at most 8."""
    if requested >= 0:
        return requested
    present = [d for d in datasets if d is not None]
    if sum(len(d) for d in present) < PARALLEL_FROM:
        return 0
    cores = available_cores()
    if cores <= 2 and all(fully_decoded(d) for d in present):
        return 0
    return max(1, min(8, cores - 1))


def workers_line(chosen: int, requested: int) -> str:
    """The line a run prints about its loader processes."""
    return f"loader workers: {chosen}" + (" (auto; --workers N to choose)" if requested < 0 else "")
