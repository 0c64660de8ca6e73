"""Reading and writing images the way cameras and phones produce them."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from pairlie.errors import DataError
from pairlie.files import atomic_open

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
# formats an enhanced image is written in unchanged; others (GIF: 256 colours) are written as PNG
WRITABLE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def is_image_file(path: Path) -> bool:
    """True for a regular file whose extension (any case) is one pairlie reads."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, read from the header only."""
    try:
        with Image.open(path) as img:
            size = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception as exc:  # PIL raises many kinds: report them all the same way
        raise DataError(f"{path}: cannot read image ({_reason(exc)}); replace or remove the file") from None
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def read_rgb(path: str | Path, keep_alpha: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode ``path`` to an H×W×3 RGB array (uint8, or uint16 for 16-bit files) and its alpha if asked.

    EXIF orientation is applied; grayscale is repeated over RGB; palette, CMYK and other modes are
    converted by Pillow. A file that cannot be decoded raises a one-line :class:`DataError`.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette transparency notices
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                alpha = None
                if keep_alpha and ("A" in img.getbands() or "transparency" in img.info):
                    alpha = np.asarray(img.convert("RGBA"))[..., 3].copy()
                if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                    gray = np.asarray(img, dtype=np.int64).clip(0, 65535).astype(np.uint16)
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
        with Image.open(path) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:
        return 1


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
