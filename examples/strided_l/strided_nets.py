"""An illumination net that works at half resolution, and an exposure-control term: a variant in a file of your own.

L is smooth, so computing it on a grid of 2 costs a quarter of the multiply-adds. A net that
downsamples tells pairlie two things so that tiles of a large photo compute exactly what the whole
photo would: ``receptive_radius`` (how far an output pixel sees) and ``alignment`` (its total
stride: tiles start on multiples of it, so every tile sees the whole image's sampling grid).
pairlie checks both once on a random probe before it tiles, and refuses a declaration that does
not hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HalfResIllumination(nn.Module):
    """L: a stride-2 4x4 encoder, ``depth`` 3x3 convs at half resolution, a bilinear x2 upsample, a 3x3 conv, a sigmoid.

    Takes N's output X (``channels`` x H x W, any H and W >= 2) and returns 1 x H x W in (0, 1).
    """

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.encode = nn.Conv2d(channels, width, 4, stride=2, padding=1)
        body: list[nn.Module] = []
        for _ in range(depth):
            body += [nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.decode = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(width, 1, 3))
        # Input pixels each way an output pixel depends on: the last conv and the x2 upsample read
        # half-resolution pixels 1 away, each half-resolution 3x3 conv 1 more, and the 4x4 stride-2
        # encoder turns half-resolution pixel j into input pixels 2j-1 to 2j+2: 2 * (1 + depth) + 2.
        self.receptive_radius = 2 * depth + 4
        self.alignment = 2  # one stride-2 layer: tiles start and end on even pixels
        self.min_size = 3  # a 2-pixel side halves to 1, too small for the body's reflection padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # odd sizes: one replicated row/column so that x2 comes back to the same grid, then cropped
        x = F.pad(x, (0, width % 2, 0, height % 2), mode="replicate")
        y = self.body(F.relu(self.encode(x)))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.decode(y))[..., :height, :width]


def exposure_control(step, level: float = 0.6, patch: int = 16) -> torch.Tensor:
    """Mean distance of the enhanced image's 16x16 patch brightness from ``level`` (Zero-DCE's exposure term).

    ``step.enhanced(k)`` is I = L**gamma * R of exposure k at the run's gamma.
    """
    brightness = step.enhanced(0).mean(dim=1, keepdim=True)
    return (F.avg_pool2d(brightness, patch, ceil_mode=True) - level).abs().mean()
