"""The three PairLIE networks: denoiser N, illumination L and reflectance R (Fu et al., CVPR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvNet(nn.Module):
    """Four [ReflectionPad2d(1), 3x3 conv, ReLU] at ``width`` channels, then a padded 3x3 conv and a sigmoid.

    The layer indices inside ``layers`` match the official code (conv weights at 1, 4, 7, 10, 13),
    so the official checkpoint maps onto it by renaming the prefix only.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, width, 3), nn.ReLU(inplace=True)]
            channels = width
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, out_channels, 3), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.layers if isinstance(m, nn.Conv2d)]

    def macs_per_pixel(self) -> int:
        """Multiply-adds of one forward pass per output pixel (every conv keeps the image size)."""
        return sum(conv_macs(c) for c in self.convs())


def conv_macs(conv: nn.Conv2d) -> int:
    """Multiply-adds of ``conv`` per output pixel."""
    return conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] // conv.groups


class PairLIENet(nn.Module):
    """N, L and R together: ``forward(im)`` returns ``(illumination, reflectance, denoised)``."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"model.width must be a positive integer, got {width}")
        self.width = width
        self.denoiser = ConvNet(3, 3, width)
        self.illumination = ConvNet(3, 1, width)
        self.reflectance = ConvNet(3, 3, width)

    def forward(self, im: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.denoiser(im)
        return self.illumination(x), self.reflectance(x), x

    def reflectance_only(self, im: Tensor) -> Tensor:
        """R of ``im`` without computing its illumination (no loss uses L of the second exposure)."""
        return self.reflectance(self.denoiser(im))

    def forward_flops(self, pixels: int) -> int:
        """FLOPs of ``forward`` on ``pixels`` pixels (batch x height x width); a multiply-add is 2 FLOPs."""
        return 2 * pixels * sum(net.macs_per_pixel() for net in (self.denoiser, self.illumination, self.reflectance))

    def training_flops(self, pixels: int, backward: bool = True) -> int:
        """FLOPs of one training step on ``pixels`` pixels per exposure, as the step runs them.

        Forward: N, L, R on the first exposure and N, R on the second. Backward: the weight gradient
        of every conv, and the input gradient of every conv but N's first (the images need none).
        """
        second = 2 * pixels * (self.denoiser.macs_per_pixel() + self.reflectance.macs_per_pixel())
        forward = self.forward_flops(pixels) + second
        if not backward:
            return forward
        # backward = twice the forward, less N's first input gradient on both exposures
        return 3 * forward - 2 * (2 * pixels * conv_macs(self.denoiser.convs()[0]))


def enhance(illumination: Tensor, reflectance: Tensor, gamma: float) -> Tensor:
    """The enhanced image ``I = L**gamma * R``."""
    return torch.pow(illumination, gamma) * reflectance
