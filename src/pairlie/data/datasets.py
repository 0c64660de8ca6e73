"""Datasets: random exposure pairs of a scene for training, low/high pairs for validation and test."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from pairlie.data.sampling import Draw
from pairlie.data.scenes import Scene
from pairlie.errors import ConfigError, DataError
from pairlie.io.images import DEFAULT_MAX_PIXELS, read_rgb, to_tensor, to_uint8

# the paper's nets pad each 3x3 convolution by reflection, which needs two pixels
# the paper protocol's SSIM window (pairlie.evaluate.metrics scores with it): pairs smaller cannot be scored
SSIM_WINDOW = 11


def check_ssim_size(low: Path, high: Path, size: tuple[int, int]) -> None:
    """Raise a one-line `DataError` when the reference ``high`` (``size``: width, height) is smaller than SSIM's window."""
    if min(size) < SSIM_WINDOW:
        raise DataError(
            f"{low} / {high}: the pair is {size[0]}x{size[1]}, smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window; "
            f"the paper's SSIM needs pairs of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels: remove the pair or use larger images"
        )


MIN_PATCH_SIZE = 2


def check_patch_size(patch_size: object) -> None:
    """Raise a one-line `ConfigError` unless ``patch_size`` is None or an integer >= `MIN_PATCH_SIZE`."""
    if patch_size is not None and (
        isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < MIN_PATCH_SIZE
    ):
        raise ConfigError(
            f"data.patch_size={patch_size!r}: must be an integer of at least {MIN_PATCH_SIZE} (the nets' reflection "
            "padding needs 2 pixels; the paper crops 128), or null for whole images"
        )


class ExposurePairDataset(Dataset):
    """Item `i` is `exposures` distinct random exposures of scene `i % len(scenes)`, cropped to the same window.

    The training-set contract (`data.train_set._target_` may name any class that keeps it): the
    class is called with `scenes`, `patch_size`, `augment`, `repeats`, `cache` and its own keys
    from `data.train_set` (here `exposures`); `len()` is the items of one epoch; `dataset[Draw(index, seed)]` returns a
    tuple of two or more float tensors C×H×W in [0, 1], all of one size, the exposures of one scene
    (the first is the one the paper's retinex and fidelity terms use). Every random choice comes
    from `torch.Generator().manual_seed(seed)`, where the sampler mixes the seed from (run seed,
    epoch, item, rank): runs repeat exactly, ranks and epochs differ, and the number of loader
    workers changes nothing.

    Every file is decoded once here, so an unreadable file stops the run before training, naming
    the file.

    Args:
        scenes: The training scenes, as [`discover_scenes`][pairlie.data.discover_scenes] finds them.
        patch_size: Side of the random crop, the same window on every exposure; `None`: whole images.
        augment: The same random flips on every exposure of an item.
        repeats: Visits of every scene per epoch.
        cache: Keep the decoded uint8 images in memory (SICE-train: ~500 MB), so that no step
            touches the disk again.
        exposures: Distinct exposures of one scene per item, 2 or more (the paper's pairs: 2).
    """

    def __init__(
        self,
        scenes: list[Scene],
        patch_size: int | None = 128,
        augment: bool = False,
        repeats: int = 1,
        cache: bool = True,
        exposures: int = 2,
    ) -> None:
        if repeats < 1:
            raise DataError(f"data.repeats={repeats}: must be a positive integer")
        check_patch_size(patch_size)
        if not isinstance(exposures, int) or exposures < 2:
            raise DataError(f"data.train_set.exposures={exposures!r}: must be an integer >= 2 (the paper's pairs: 2)")
        short = [scene for scene in scenes if len(scene.paths) < exposures]
        if short:
            folder = short[0].paths[0].parent if short[0].paths else short[0].name
            raise DataError(
                f"{folder}: {len(short[0].paths)} exposure(s), fewer than data.train_set.exposures={exposures} "
                f"({len(short)} scene(s) have fewer); give scenes with more exposures or lower data.train_set.exposures"
            )
        self.exposures = exposures
        self.scenes = scenes
        self.patch_size = patch_size
        self.augment = augment
        self.repeats = repeats
        self.cache: dict[Path, torch.Tensor] = {}
        for scene in scenes:
            for path in scene.paths:
                image = self._decode(path)
                if image.shape[1:] != (scene.size[1], scene.size[0]):
                    raise DataError(f"{path}: decoded size {tuple(image.shape[1:])} differs from its header")
                if cache:
                    self.cache[path] = image

    @staticmethod
    def _decode(path: Path) -> torch.Tensor:
        return torch.from_numpy(to_uint8(read_rgb(path)[0])).permute(2, 0, 1).contiguous()

    def _image(self, path: Path) -> torch.Tensor:
        image = self.cache.get(path)
        return image if image is not None else self._decode(path)

    def __len__(self) -> int:
        return len(self.scenes) * self.repeats

    def __getitem__(self, key: int | Draw) -> tuple[torch.Tensor, ...]:
        """The exposures of an item's scene; a `Draw` key seeds the draws, an int uses the global RNG."""
        index, generator = (
            (key.index, torch.Generator().manual_seed(key.seed)) if isinstance(key, Draw) else (key, None)
        )
        scene = self.scenes[index % len(self.scenes)]
        chosen = torch.randperm(len(scene.paths), generator=generator)[: self.exposures].tolist()
        images = [self._image(scene.paths[k]) for k in chosen]
        if self.patch_size:
            height, width = images[0].shape[1:]
            top = int(torch.randint(0, height - self.patch_size + 1, (), generator=generator))
            left = int(torch.randint(0, width - self.patch_size + 1, (), generator=generator))
            window = (slice(None), slice(top, top + self.patch_size), slice(left, left + self.patch_size))
            images = [im[window] for im in images]
        if self.augment:
            images = same_flips(images, generator)
        return tuple(im.float().div_(255.0) for im in images)


def same_flips(images: list[torch.Tensor], generator: torch.Generator | None) -> list[torch.Tensor]:
    """The same random horizontal/vertical flip and transpose on every image."""
    flips = torch.rand(3, generator=generator) < 0.5
    if flips[0]:
        images = [im.flip(-1) for im in images]
    if flips[1]:
        images = [im.flip(-2) for im in images]
    if flips[2] and images[0].shape[-1] == images[0].shape[-2]:
        images = [im.transpose(-1, -2) for im in images]
    return images


class PairedImageDataset(Dataset):
    """Item: ``{"low": 3×H×W float, "high": H×W×3 uint8, "name": low file name}``; no ``"high"`` where a test image has no reference."""

    def __init__(self, pairs: list[tuple[Path, Path | None]], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.pairs = pairs
        self.max_pixels = max_pixels  # larger images are refused from their header (None: no cap)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        low, high = self.pairs[index]
        item = {"low": to_tensor(read_rgb(low, max_pixels=self.max_pixels)[0]), "name": low.name}
        if high is not None:
            item["high"] = torch.from_numpy(to_uint8(read_rgb(high, max_pixels=self.max_pixels)[0]))
        return item

    def check_readable(self) -> None:
        """Decode every file once so that a broken one, or a pair too small for SSIM, is named before any work starts."""
        for low, high in self.pairs:
            read_rgb(low, max_pixels=self.max_pixels)
            if high is not None:
                height, width = read_rgb(high, max_pixels=self.max_pixels)[0].shape[:2]
                check_ssim_size(low, high, (width, height))
