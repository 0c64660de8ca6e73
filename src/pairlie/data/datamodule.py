"""The LightningDataModule serving exposure pairs for training, low/high pairs for validation, and the test set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from pairlie.data.datasets import PairedImageDataset, check_patch_size
from pairlie.data.demo import build_demo
from pairlie.data.sampling import SeededSampler, run_seed
from pairlie.data.scenes import discover_pairs, discover_scenes, discover_test_images
from pairlie.errors import ConfigError, DataError
from pairlie.io.images import DEFAULT_MAX_PIXELS
from pairlie.specs import locate, plain_spec

DEFAULT_TRAIN_SET = "pairlie.data.ExposurePairDataset"


class PairLIEDataModule(L.LightningDataModule):
    """Scenes from `train_dir`; low/high pairs from `val_dir` (validation) and `test_dir` (test).

    `pairlie-train` builds it from the `data.*` keys. Every folder is checked and every training
    image decoded in `setup()`, so bad data stops the run with a one-line message before the first
    step. Training order, exposures, crops and flips follow from `seed`, the epoch, the item and
    the rank. `pairlie-test` scores `test_set.pairs` itself.

    Args:
        train_dir: One sub-folder per scene, two or more exposures each
            ([`discover_scenes`][pairlie.data.discover_scenes]).
        val_dir: `low/` and `high/` with matching names
            ([`discover_pairs`][pairlie.data.discover_pairs]).
        test_dir: As `val_dir`, or a folder of images without references (scored by NIQE and LOE).
        patch_size: Side of the random crop, the same window on every exposure; `None`: whole images.
        batch_size: Items per training batch.
        num_workers: DataLoader worker processes (images are decoded once and cached, so workers
            rarely help).
        augment: The same random flips on every exposure of an item (off, as published).
        repeats: Visits of every scene per epoch.
        pairing: `"name"` (equal file names), `"sice"` (`low/<seq>_<k>.ext` with `high/<seq>.ext`)
            or `"auto"` (names, then the SICE rule).
        val_limit: Score only the first N validation pairs; `None`: all.
        test_limit: Score only the first N test pairs; `None`: all.
        cache: Keep the decoded training images in memory.
        pin_memory: The DataLoaders' `pin_memory`.
        demo_root: Build the embedded demo set here when it is missing.
        gamma: Not used here: the data preset's γ (`data.gamma`: LOL 0.14, SICE 0.2), which the
            configs read (`model.gamma`'s default, `pairlie-test`'s γ); taken because Hydra passes
            every key of `data` to this class.
        seed: Seed of the training draws; `None`: the run's `seed_everything` seed.
        train_set: A spec of the training set (`data.train_set`); `None`:
            [`ExposurePairDataset`][pairlie.data.ExposurePairDataset] with two exposures.
        max_pixels: Validation and test images over this many pixels are refused from their header;
            `None`: no cap.
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        patch_size: int | None = 128,
        batch_size: int = 1,
        num_workers: int = 0,
        augment: bool = False,
        repeats: int = 1,
        pairing: str = "auto",
        val_limit: int | None = None,
        test_limit: int | None = None,
        cache: bool = True,
        pin_memory: bool = False,
        demo_root: str | None = None,
        gamma: float | None = None,
        seed: int | None = None,
        train_set: Mapping[str, Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("repeats", repeats)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key}={value!r}: must be a positive integer")
        check_patch_size(patch_size)
        if batch_size > 1 and not patch_size:
            raise ConfigError(
                "data.batch_size > 1 needs data.patch_size: whole images of different sizes cannot be batched"
            )
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers!r}: must be an integer >= 0")
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"data.seed={seed!r}: must be an integer >= 0, or null for the run's seed")
        train_set = plain_spec(dict(train_set or {"_target_": DEFAULT_TRAIN_SET}))
        if "_target_" not in train_set:
            train_set["_target_"] = DEFAULT_TRAIN_SET
        locate(train_set["_target_"], "data.train_set")  # a target that does not import: one line, now
        self.save_hyperparameters(logger=False)
        self.hparams.train_set = train_set
        self.train_set: Dataset | None = None
        self.val_set: PairedImageDataset | None = None
        self.test_set: PairedImageDataset | None = None

    def prepare_data(self) -> None:
        if self.hparams.demo_root:
            build_demo(self.hparams.demo_root)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None) and self.train_set is None:
            if not hp.train_dir:
                raise ConfigError("data.train_dir is not set: give the folder of training scenes")
            scenes = discover_scenes(hp.train_dir, hp.patch_size, key="data.train_dir")
            self.train_set = self._train_set(scenes)
        if stage in ("fit", "validate", None) and self.val_set is None and hp.val_dir:
            self.val_set = self._paired(hp.val_dir, "data.val_dir", hp.val_limit)
        if stage == "test" and self.test_set is None:
            folder, key = (hp.test_dir, "data.test_dir") if hp.test_dir else (hp.val_dir, "data.val_dir")
            if not folder:
                raise ConfigError(
                    "data.test_dir is not set: give a folder with low/ and high/ sub-folders, or a folder of images"
                )
            self.test_set = self._paired(folder, key, hp.test_limit, unpaired=True)

    def _train_set(self, scenes: list) -> Dataset:
        """The training set ``data.train_set`` names, given the scenes and the data keys (see `ExposurePairDataset`)."""
        from hydra.utils import instantiate

        spec = {k: v for k, v in self.hparams.train_set.items() if k not in ("_partial_", "_convert_", "_recursive_")}
        hp = self.hparams
        try:
            dataset = instantiate({**spec, "_partial_": True})(
                scenes=scenes, patch_size=hp.patch_size, augment=hp.augment, repeats=hp.repeats, cache=hp.cache
            )
        except (ConfigError, DataError):
            raise
        except Exception as exc:
            reason = str(exc).splitlines()[-1].strip() or type(exc).__name__
            raise ConfigError(f"data.train_set: {spec['_target_']} could not be built ({reason})") from None
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigError(
                f"data.train_set._target_={spec['_target_']}: not a Dataset (needs __len__ and __getitem__)"
            )
        return dataset

    def _paired(self, folder: str, key: str, limit: int | None, unpaired: bool = False) -> PairedImageDataset:
        # a test folder may hold images without references (scored without them); validation needs pairs
        discover = discover_test_images if unpaired else discover_pairs
        pairs = discover(Path(folder), self.hparams.pairing, key=key)
        if limit is not None:
            if not isinstance(limit, int) or limit < 1:
                raise ConfigError(f"{key.replace('_dir', '_limit')}={limit!r}: must be a positive integer or null")
            pairs = pairs[:limit]
        dataset = PairedImageDataset(pairs, self.hparams.max_pixels)
        dataset.check_readable()
        return dataset

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset, batch_size: int, shuffle: bool, drop_last: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        rank, world = self._rank_and_world()
        if shuffle:
            seed = self.hparams.seed if self.hparams.seed is not None else run_seed()
            sampler = SeededSampler(dataset, seed, rank, world)
        else:
            # Every image on exactly one rank: DistributedSampler would pad with repeats and bias the mean.
            sampler = list(range(rank, len(dataset), world))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=workers > 0,
            drop_last=drop_last and len(sampler) >= batch_size,  # never drop a rank's only batch
        )

    def train_dataloader(self) -> DataLoader:
        # compiled nets would recompile for a short last batch's shape (and record another CUDA graph)
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True, drop_last=self._model_compiles())

    def _model_compiles(self) -> bool:
        """Whether the model being fitted runs ``torch.compile`` (``model.compile``)."""
        module = getattr(self.trainer, "lightning_module", None)
        return bool(getattr(module, "hparams", {}).get("compile"))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1, shuffle=False) if self.val_set is not None else []
