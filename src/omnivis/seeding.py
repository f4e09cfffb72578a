"""Seeds: every random draw of a run is a function of (seed, ...) integers, never of a history.

``mix_seed`` turns (seed, epoch, sample index) into the seed of one sample's augmentation (the
datasets in ``omnivis.data``) and (seed, global step, rank) into the seed of one training step's
model draws (``StepSeed`` in ``omnivis.engine.trainer``); ``reseed_torch`` applies such a seed.
This module imports nothing from omnivis, so data and engine can both use it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reseed_torch(seed: int) -> None:
    """Reseed torch's CPU generator, and the CUDA ones once CUDA is in use.

    Not ``torch.manual_seed``: before CUDA is initialized (every CPU run) it queues a lazy CUDA
    seeding that captures a stack trace, ~0.35 ms under Lightning's deep stacks, paid per sample
    by the datasets and per step by ``StepSeed`` (a 64-image batch lost ~20 ms to it).
    """
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


_MASK32 = 0xFFFFFFFF
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715


def _seed_hash(entropy: list, word: Callable[[int], Any]) -> Any:
    """SeedSequence's hash of ``entropy`` (32-bit words: Python ints, or uint64 arrays of them) to
    the first uint64 of its state, shifted to 63 bits; ``word`` puts a constant in the words' type."""
    mask, shift16 = word(_MASK32), word(16)
    hash_const = _INIT_A

    def hashmix(value):
        nonlocal hash_const
        value = (value ^ word(hash_const)) & mask
        hash_const = (hash_const * _MULT_A) & _MASK32
        value = (value * word(hash_const)) & mask
        return value ^ (value >> shift16)

    def mix(x, y):
        result = (word(_MIX_MULT_L) * x - word(_MIX_MULT_R) * y) & mask  # arrays wrap mod 2**64, then 2**32
        return result ^ (result >> shift16)

    pool = [hashmix(entropy[i] if i < len(entropy) else word(0)) for i in range(4)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(4, len(entropy)):
        for dst in range(4):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    words, hash_b = [], _INIT_B
    for i in range(2):  # two 32-bit words, little-endian, make the first uint64 of the state
        value = pool[i] ^ word(hash_b)
        hash_b = (hash_b * _MULT_B) & _MASK32
        value = (value * word(hash_b)) & mask
        words.append(value ^ (value >> shift16))
    return (words[0] | (words[1] << word(32))) >> word(1)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SeedSequence hashing: nearby inputs give unrelated seeds).

    The value is exactly ``SeedSequence([p & 0xFFFFFFFF ...]).generate_state(2, uint64)[0] >> 1``;
    numpy's hash is re-done in plain Python because ``StepSeed`` calls this between training steps,
    when numpy's code has been evicted from the CPU caches: ~130 us a call there, this ~30 us.
    """
    return _seed_hash([int(p) & _MASK32 for p in parts], int)


def mix_seeds(*parts: int | np.ndarray) -> list[int]:
    """``mix_seed`` for many seeds at once: ``parts`` are integers or equal-length integer arrays
    (broadcast), and the result is ``[mix_seed(*column) for each column]``, the same numbers, from
    numpy's vectorized arithmetic: a dataset reading a batch of 64 samples pays one call, not 64."""
    columns = np.broadcast_arrays(*(np.asarray(p, dtype=np.int64) for p in parts))
    entropy = [c.astype(np.uint64) & np.uint64(_MASK32) for c in columns]  # two's complement, as int(p) & _MASK32
    return _seed_hash(entropy, np.uint64).tolist()
