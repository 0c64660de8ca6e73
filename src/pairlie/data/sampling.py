"""Which training items a rank visits each epoch, and the seed of each item's random draws."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset, DistributedSampler


class Draw(NamedTuple):
    """A dataset key: item ``index``, whose exposures, crop and flips come from ``seed``."""

    index: int
    seed: int


def draw_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    """A 63-bit seed mixed from all four: reproducible for a run, different across ranks and epochs."""
    return int(np.random.SeedSequence([seed, epoch, index, rank]).generate_state(1, np.uint64)[0] >> 1)


def run_seed() -> int:
    """The seed Lightning's ``seed_everything`` set for this run (and its spawned ranks), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class SeededSampler(DistributedSampler):
    """DistributedSampler's shuffled shard of ``seed`` and the epoch, yielding `Draw` keys.

    The draws depend on (seed, epoch, index, rank) only: not on the global RNG (the same on every
    rank after ``seed_everything``), nor on the number of loader workers. A DistributedSampler
    subclass, so Lightning neither replaces it nor wraps it again, and calls ``set_epoch``.
    """

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1) -> None:
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)

    def __iter__(self) -> Iterator[Draw]:
        for index in super().__iter__():
            yield Draw(index, draw_seed(self.seed, self.epoch, index, self.rank))
