"""Reading and writing images the way cameras and phones produce them."""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from pairlie.errors import ConfigError, DataError
from pairlie.io.files import atomic_open

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
READABLE = "png/jpg/jpeg/bmp/tif/tiff/webp/gif"
# formats an enhanced image is written in unchanged; others (GIF: 256 colours) are written as PNG
WRITABLE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# the largest image decoded unless asked (the max_pixels key): Pillow's own decompression-bomb limit
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS
_BOMB_CHECK = threading.RLock()  # Pillow's limit is a module global: one reader switches it at a time


def is_image_file(path: Path) -> bool:
    """True for a regular file whose extension (any case) is one pairlie reads."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def is_regular_file(path: Path) -> bool:
    """True for a regular file (after symbolic links); False for a FIFO, socket or device, which would block or never end."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _require_regular(path: Path) -> None:
    # opening a FIFO named x.png waits for a writer forever: never open one
    if os.path.exists(path) and not is_regular_file(path):
        raise DataError(f"{path}: not a regular file (a FIFO, socket or device); remove it or give an image file")


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` with Pillow's decompression-bomb check off: `read_rgb` applies ``max_pixels`` itself."""
    _require_regular(path)
    with _BOMB_CHECK:
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. palette transparency notices
                with Image.open(path) as img:
                    yield img
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, read from the header only."""
    try:
        with _opened(path) as img:
            size = img.size
            orientation = img.getexif().get(0x0112, 1)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many kinds: report them all the same way
        raise DataError(f"{path}: cannot read image ({_reason(exc)}); replace or remove the file") from None
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def read_rgb(
    path: str | Path, keep_alpha: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode ``path`` to an H×W×3 RGB array (uint8, or uint16 for 16-bit files) and its alpha if asked.

    EXIF orientation is applied; grayscale is repeated over RGB; palette, CMYK and other modes are
    converted by Pillow. An image of more than ``max_pixels`` pixels (its header says; None: no cap)
    is refused before it is decoded. A file that cannot be decoded raises a one-line `DataError`.

    One-channel integer and float images (TIFF modes ``I;16``, ``I``, ``F``) are scaled by what they
    hold, as they carry no bit depth of their own (see `gray_levels`).
    """
    path = Path(path)
    try:
        with _opened(path) as img:
            pixels = img.size[0] * img.size[1]
            if max_pixels is not None and pixels > max_pixels:
                raise DataError(
                    f"{path}: {pixels} pixels is over max_pixels={max_pixels}; raise max_pixels to enhance it"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            alpha = None
            if keep_alpha and ("A" in img.getbands() or "transparency" in img.info):
                alpha = np.asarray(img.convert("RGBA"))[..., 3].copy()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                gray = gray_levels(np.asarray(img), img.mode)
                rgb = np.repeat(gray[..., None], 3, axis=2)
            else:
                rgb = np.asarray(img.convert("RGB")).copy()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({_reason(exc)}); replace or remove the file") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise DataError(f"{path}: image is empty; replace or remove the file")
    return rgb, alpha


def gray_levels(values: np.ndarray, mode: str) -> np.ndarray:
    """A one-channel integer or float image as uint8 or uint16, scaled by its mode and the values it holds.

    - ``I;16`` (16-bit): as is, uint16 (white is 65535).
    - ``I`` (32-bit integer): 8-bit values (max <= 255) as uint8; 16-bit values (max <= 65535) as
      uint16; larger ones scaled from the 32-bit range (white is 2**31 - 1).
    - ``F`` (float): values in [0, 1] are taken as is, in [0, 255] as 8-bit levels, in [0, 65535] as
      16-bit levels, larger ones scaled by their maximum; NaN is black, infinity white. Written as uint16.

    Negative values are black. An 8-bit image whose brightest pixel is 0 or 1 is ambiguous in
    ``F``: it is read as [0, 1].
    """
    if mode.startswith("I;16"):
        return values.astype(np.int64).clip(0, 65535).astype(np.uint16)
    if mode == "I":
        ints = values.astype(np.int64).clip(0, None)
        top = int(ints.max(initial=0))
        if top <= 255:
            return ints.astype(np.uint8)
        if top <= 65535:
            return ints.astype(np.uint16)
        return (ints.astype(np.float64) * (65535 / (2**31 - 1))).round().clip(0, 65535).astype(np.uint16)
    floats = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=np.inf, neginf=0.0)
    finite = floats[np.isfinite(floats)]
    top = float(finite.max(initial=0.0))
    white = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else top
    return (floats * (65535.0 / white)).clip(0, 65535).round().astype(np.uint16)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """8-bit version of an image array (16-bit values rounded to the nearest of 256 levels)."""
    if rgb.dtype == np.uint16:
        return (rgb.astype(np.float64) / 257.0).round().astype(np.uint8)
    return rgb


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8/uint16 array to a 3×H×W float32 tensor in [0, 1] (the array is never written to)."""
    scale = 65535.0 if rgb.dtype == np.uint16 else 255.0
    if not rgb.flags.writeable:  # torch.from_numpy warns on read-only arrays (np.asarray of a PIL image)
        rgb = rgb.copy()
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(scale)


def load_image(path: str | Path) -> torch.Tensor:
    """3×H×W float32 tensor in [0, 1] of the image at ``path``."""
    return to_tensor(read_rgb(path)[0])


def quantize(image: torch.Tensor) -> np.ndarray:
    """3×H×W float in [0, 1] to H×W×3 uint8 by truncation of ``x·255``, as the PairLIE authors saved."""
    arr = (image.detach().float().clamp(0, 1) * 255.0).to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def save_atomic(img: Image.Image, path: Path, **save_kwargs) -> None:
    """Write ``img`` to ``path`` through a temporary file in the same folder, then rename."""
    with atomic_open(path, "wb") as fh:
        img.save(fh, format=Image.registered_extensions().get(path.suffix.lower()), **save_kwargs)


def frame_count(path: Path) -> int:
    """Frames in an animated GIF/WebP or pages in a multi-page TIFF (1 for a still image), from the header."""
    try:
        with _opened(path) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:
        return 1


def check_max_pixels(max_pixels: object) -> None:
    """Raise a one-line `ConfigError` unless ``max_pixels`` is a positive integer or None (no cap)."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1):
        raise ConfigError(
            f"max_pixels={max_pixels!r}: must be a positive integer (default {DEFAULT_MAX_PIXELS}, Pillow's), "
            "or null for no cap"
        )


def check_jpeg_quality(quality: object) -> None:
    """Raise a one-line `ConfigError` unless ``quality`` is an integer from 1 to 100."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(
            f"jpeg_quality={quality!r}: must be an integer from 1 to 100 (default 95; above 95 files grow for little gain)"
        )


def save_image(img: Image.Image | np.ndarray, path: Path, jpeg_quality: int = 95) -> None:
    """Save atomically in the format of ``path``'s extension; JPEG at ``jpeg_quality``, alpha dropped for JPEG."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    kwargs = {}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img = img.convert("RGB")
        kwargs = {"quality": jpeg_quality, "subsampling": 0 if jpeg_quality >= 90 else -1}
    elif path.suffix.lower() == ".webp":
        kwargs = {"quality": jpeg_quality}
    elif path.suffix.lower() == ".bmp" and img.mode == "RGBA":
        img = img.convert("RGB")
    save_atomic(img, path, **kwargs)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace(str(Path.cwd()) + os.sep, "")


@dataclass
class Inputs:
    """The images to enhance as ``(file, path relative to the output folder)``, and the files passed over."""

    items: list[tuple[Path, Path]]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(source: str | Path) -> Inputs:
    """Every image of a file or a folder tree; other files are listed in ``skipped`` with the reason.

    Folders are walked without following symbolic links (no loops); a folder named like an image
    (``x.jpg/``) is walked, not read; a FIFO, socket or device named like one is passed over unopened
    (reading a FIFO would wait for a writer forever).
    """
    source = Path(source).expanduser()
    if source.exists() and not source.is_file() and not source.is_dir():
        raise DataError(
            f"input={source}: not a regular file (a FIFO, socket or device); give an image file or a folder"
        )
    if source.is_file():
        if source.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"input={source}: not an image pairlie reads ({READABLE})")
        return Inputs([(source, Path(source.name))])
    if not source.is_dir():
        raise DataError(f"input={source}: no such file or folder")
    found = Inputs([])
    for folder, dirs, files in os.walk(source, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS and os.path.exists(path) and not is_regular_file(path):
                found.skipped.append((path, "not a regular file"))
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                found.items.append((path, path.relative_to(source)))
            else:
                found.skipped.append((path, f"not an image pairlie reads ({READABLE})"))
    if not found.items:
        raise DataError(f"input={source}: no images ({READABLE}) in this folder or below")
    return found
