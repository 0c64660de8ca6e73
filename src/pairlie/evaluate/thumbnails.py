"""The small JPEGs of each scored image (input, enhanced, reference, L, R) that pairlie-test's report shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from pairlie.io.images import quantize, save_image

THUMB_SIZE = 320  # longest side, pixels
THUMB_DIR = "report"
KINDS = ("input", "enhanced", "reference", "L", "R")


def thumbnail_name(name: str, kind: str) -> str:
    """The file name of an image's thumbnail of ``kind`` (input, enhanced, reference, L, R)."""
    return f"{name}.{kind}.jpg"


def save_thumbnails(
    folder: Path,
    name: str,
    low: np.ndarray,
    enhanced: np.ndarray,
    reference: np.ndarray | None,
    illumination: Tensor,
    reflectance: Tensor,
) -> None:
    """Small JPEGs of one image's input, enhanced, reference (if any), L and R in ``folder``."""
    images = {
        "input": low,
        "enhanced": enhanced,
        "reference": reference,
        "L": quantize(illumination.expand(3, -1, -1)),
        "R": quantize(reflectance),
    }
    for kind, array in images.items():
        if array is None:
            continue
        image = Image.fromarray(array)
        image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC)
        save_image(image, folder / thumbnail_name(name, kind), jpeg_quality=85)
