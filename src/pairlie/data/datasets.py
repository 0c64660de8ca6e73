"""Datasets: random exposure pairs of a scene for training, low/high pairs for validation and test."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from pairlie.data.sampling import Draw
from pairlie.data.scenes import Scene
from pairlie.errors import DataError
from pairlie.images import read_rgb, to_tensor, to_uint8


class ExposurePairDataset(Dataset):
    """Item ``i`` is two distinct random exposures of scene ``i % len(scenes)``, cropped to the same window.

    Every file is decoded once here, so an unreadable file stops the run before training, naming
    the file. With ``cache=True`` the decoded uint8 images stay in memory (SICE-train: ~500 MB) and
    no step touches the disk again.
    """

    def __init__(
        self,
        scenes: list[Scene],
        patch_size: int | None = 128,
        augment: bool = False,
        repeats: int = 1,
        cache: bool = True,
    ) -> None:
        if repeats < 1:
            raise DataError(f"data.repeats={repeats}: must be a positive integer")
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

    def __getitem__(self, key: int | Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """Two exposures of an item's scene; a :class:`Draw` key seeds the draws, an int uses the global RNG."""
        index, generator = (
            (key.index, torch.Generator().manual_seed(key.seed)) if isinstance(key, Draw) else (key, None)
        )
        scene = self.scenes[index % len(self.scenes)]
        first, second = torch.randperm(len(scene.paths), generator=generator)[:2].tolist()
        im1, im2 = self._image(scene.paths[first]), self._image(scene.paths[second])
        if self.patch_size:
            height, width = im1.shape[1:]
            top = int(torch.randint(0, height - self.patch_size + 1, (), generator=generator))
            left = int(torch.randint(0, width - self.patch_size + 1, (), generator=generator))
            window = (slice(None), slice(top, top + self.patch_size), slice(left, left + self.patch_size))
            im1, im2 = im1[window], im2[window]
        if self.augment:
            im1, im2 = _same_flips(im1, im2, generator)
        return im1.float().div_(255.0), im2.float().div_(255.0)


def _same_flips(
    im1: torch.Tensor, im2: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random horizontal/vertical flip and transpose on both images."""
    flips = torch.rand(3, generator=generator) < 0.5
    if flips[0]:
        im1, im2 = im1.flip(-1), im2.flip(-1)
    if flips[1]:
        im1, im2 = im1.flip(-2), im2.flip(-2)
    if flips[2] and im1.shape[-1] == im1.shape[-2]:
        im1, im2 = im1.transpose(-1, -2), im2.transpose(-1, -2)
    return im1, im2


class PairedImageDataset(Dataset):
    """Item: ``{"low": 3×H×W float, "high": H×W×3 uint8, "name": low file name}``; no ``"high"`` where a test image has no reference."""

    def __init__(self, pairs: list[tuple[Path, Path | None]]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        low, high = self.pairs[index]
        item = {"low": to_tensor(read_rgb(low)[0]), "name": low.name}
        if high is not None:
            item["high"] = torch.from_numpy(to_uint8(read_rgb(high)[0]))
        return item

    def check_readable(self) -> None:
        """Decode every file once so that a broken one is named before training starts."""
        for low, high in self.pairs:
            read_rgb(low)
            if high is not None:
                read_rgb(high)
