"""Collapsed outputs: enhanced images with no texture left, what a PairLIE model gives before it has learnt much.

Early in training (a few dozen steps) L, R and so ``L**gamma * R`` can come out constant: a flat grey
image. Its PSNR can sit well above the unenhanced input's, and runs that collapsed tie at one
value, so the scores alone look like progress; the validation says so instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

# spread over the image below one grey level in every channel: nothing a viewer would call a picture
FLAT_STD = 1 / 255
FLAT_METRIC = "val/flat"  # fraction of validation outputs that are flat, logged at every validation


def is_flat(image: torch.Tensor | np.ndarray, max_std: float = FLAT_STD) -> bool:
    """True when every channel of ``image`` (C×H×W, values in [0, 1]) has a standard deviation below ``max_std``."""
    values = torch.as_tensor(image).detach().float().reshape(image.shape[0], -1)
    return bool((values.std(dim=1, correction=0) < max_std).all())


def flat_warning(fraction: float | None, images: str = "validation images") -> str | None:
    """The warning when at least half the ``images`` came out flat (``fraction`` of them), else None."""
    if fraction is None or not fraction >= 0.5:
        return None
    return (
        f"outputs are constant: {fraction:.0%} of the {images} came out flat (no texture), "
        "typical before a few hundred steps; train longer (trainer.max_epochs or trainer.max_steps)"
    )


def flat_note(metrics: Mapping[str, float]) -> str | None:
    """The warning for the end-of-run block when at least half the validation outputs were flat, else None."""
    return flat_warning(metrics.get(FLAT_METRIC))
