"""A reflectance net six layers deep and a smoothness term on R: a model variant in a file of your own.

pairlie finds both by their ``_target_`` (``my_nets.DeepReflectance``, ``my_nets.reflectance_smoothness``)
when the commands run from this folder, or from anywhere with this folder on PYTHONPATH.
"""

from __future__ import annotations

import torch
from torch import nn


class DeepReflectance(nn.Module):
    """R: ``depth`` [ReflectionPad2d(1), 3x3 conv, LeakyReLU] at ``width`` channels, then a 3x3 conv and a sigmoid."""

    def __init__(self, channels: int = 3, width: int = 64, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for _ in range(depth):
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, width, 3), nn.LeakyReLU(0.2)]
            cin = width
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, channels, 3), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        # how far an output pixel sees: one pixel per 3x3 conv. pairlie tiles large images with this
        # much context; a net that does not declare it (and is not a plain nn.Sequential) runs whole.
        self.receptive_radius = depth + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def reflectance_smoothness(step, exposures: str = "first") -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of R (an L1 smoothness prior).

    ``step`` holds the step's tensors: ``step.images[k]`` and ``step.reflectance(k)``,
    ``step.illumination(k)``, ``step.denoised(k)`` for exposure ``k``.
    """
    ks = range(len(step)) if exposures == "all" else range(1)
    total = 0.0
    for k in ks:
        r = step.reflectance(k)
        total = total + (r[..., 1:, :] - r[..., :-1, :]).abs().mean() + (r[..., :, 1:] - r[..., :, :-1]).abs().mean()
    return total / len(ks)
