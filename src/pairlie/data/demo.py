"""A small demo set built on first use from the colour photographs that ship with scikit-image.

Each training photo is cut into tiles; each tile becomes a scene of several simulated low-light
exposures. The physical model: linearise sRGB, scale the exposure, draw Poisson shot noise and
Gaussian read noise in electrons, re-encode to 8-bit sRGB. Held-out photos become ``val/low`` (one
simulated exposure) and ``val/high`` (the original photo).
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pairlie.errors import DataError
from pairlie.io.files import current_umask

TRAIN_PHOTOS = ("astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png")
VAL_PHOTOS = ("chelsea.png", "coffee.png")
TILE = 160
EXPOSURES_PER_SCENE = 3
EXPOSURE_RANGE = (0.03, 0.15)  # fraction of the photo's exposure, log-uniform
FULL_WELL = 1000.0  # electrons at linear 1.0 and full exposure: sets the shot-noise level
READ_NOISE = 2.0  # electrons, standard deviation


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def simulate_exposure(photo: np.ndarray, exposure: float, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit sRGB low-light shot of ``photo`` (H×W×3 uint8) at ``exposure`` times its light."""
    electrons = srgb_to_linear(photo / 255.0) * exposure * FULL_WELL
    noisy = rng.poisson(electrons) + rng.normal(0.0, READ_NOISE, photo.shape)
    linear = np.clip(noisy / FULL_WELL, 0.0, 1.0)
    return np.round(linear_to_srgb(linear) * 255.0).astype(np.uint8)


def _photo(name: str) -> np.ndarray:
    with importlib.resources.as_file(importlib.resources.files("skimage.data") / name) as path:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))


def _write(tree: Path, rng: np.random.Generator) -> None:
    for name in TRAIN_PHOTOS:
        photo = _photo(name)
        stem = Path(name).stem
        for top in range(0, photo.shape[0] - TILE + 1, TILE):
            for left in range(0, photo.shape[1] - TILE + 1, TILE):
                tile = photo[top : top + TILE, left : left + TILE]
                scene = tree / "train" / f"{stem}_{top}_{left}"
                scene.mkdir(parents=True)
                exposures = np.exp(rng.uniform(*np.log(EXPOSURE_RANGE), EXPOSURES_PER_SCENE))
                for k, exposure in enumerate(sorted(exposures), start=1):
                    Image.fromarray(simulate_exposure(tile, exposure, rng)).save(scene / f"{k}.png")
    for sub in ("low", "high"):
        (tree / "val" / sub).mkdir(parents=True)
    for name in VAL_PHOTOS:
        photo = _photo(name)
        out = f"{Path(name).stem}.png"
        Image.fromarray(photo).save(tree / "val" / "high" / out)
        exposure = float(np.sqrt(EXPOSURE_RANGE[0] * EXPOSURE_RANGE[1]))
        Image.fromarray(simulate_exposure(photo, exposure, rng)).save(tree / "val" / "low" / out)


def build_demo(root: str | Path, seed: int = 0) -> Path:
    """Build the demo set under ``root`` unless it is already complete; returns ``root``.

    The set is written into a temporary sibling folder and renamed into place, so an interrupted
    build never leaves a half-built set behind.
    """
    root = Path(root).expanduser()
    if (root / "COMPLETE").is_file():
        return root
    if root.exists() and any(root.iterdir()):
        raise DataError(f"paths.demo_dir={root}: folder exists but holds no complete demo set; remove it to rebuild")
    root.parent.mkdir(parents=True, exist_ok=True)
    print(f"building the demo set in {root} (first use only; it takes a minute)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a shared cache should follow the umask
    try:
        _write(tmp, np.random.default_rng(seed))
        (tmp / "COMPLETE").write_text("pairlie demo set\n")
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if (root / "COMPLETE").is_file():  # another process finished first
            return root
        raise
    return root
