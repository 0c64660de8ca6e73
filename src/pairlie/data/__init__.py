"""Data: scene discovery, exposure-pair and paired test datasets, the datamodule and the demo set.

May import `pairlie.io` and `pairlie.specs` (a training set of one's own by ``_target_``).
"""

from pairlie.data.datamodule import PairLIEDataModule
from pairlie.data.datasets import ExposurePairDataset, PairedImageDataset
from pairlie.data.demo import build_demo
from pairlie.data.scenes import Scene, discover_pairs, discover_scenes

__all__ = [
    "ExposurePairDataset",
    "PairLIEDataModule",
    "PairedImageDataset",
    "Scene",
    "build_demo",
    "discover_pairs",
    "discover_scenes",
]
