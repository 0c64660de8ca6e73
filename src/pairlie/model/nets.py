"""The three PairLIE networks: denoiser N, illumination L and reflectance R (Fu et al., CVPR 2023).

The defaults are the paper's nets. Their shape is configurable (``model.net.*``: channels, width,
depth, padding and each net's output activation), and each of N, L and R can be replaced by any
``nn.Module`` (``model.net.reflectance: {_target_: ...}``). A net of one's own replaces
`PairLIENet` whole: its ``forward(im)`` returns ``(illumination, reflectance, denoised)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pairlie.specs import describe

# output activations by name (model.net.<part>_output)
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "identity": nn.Identity}
PADDINGS = ("reflect", "zeros")


class ConvNet(nn.Module):
    """``depth`` [ReflectionPad2d(1), 3x3 conv, ReLU] at ``width`` channels, then a padded 3x3 conv and ``output``.

    The layer indices inside ``layers`` match the official code (conv weights at 1, 4, 7, 10, 13),
    so the official checkpoint maps onto it by renaming the prefix only. ``padding="zeros"`` pads
    inside each convolution instead (no pad layers).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 64,
        depth: int = 4,
        output: str = "sigmoid",
        padding: str = "reflect",
    ) -> None:
        super().__init__()
        for key, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.net.{key}={value!r}: must be a positive integer")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"model.net.depth={depth!r}: must be an integer >= 0 (4 in the paper)")
        if output not in ACTIVATIONS:
            raise ValueError(f"model.net output activation {output!r}: must be one of {sorted(ACTIVATIONS)}")
        if padding not in PADDINGS:
            raise ValueError(f"model.net.padding={padding!r}: must be reflect (the paper's) or zeros")
        self.in_channels, self.out_channels = in_channels, out_channels
        # what rebuilds this net from a checkpoint (pairlie.specs), also when it was made in Python
        self.pairlie_spec = {
            "_target_": "pairlie.model.nets.ConvNet",
            **dict(in_channels=in_channels, out_channels=out_channels, width=width, depth=depth),
            **dict(output=output, padding=padding),
        }

        def block(cin: int, cout: int, activation: nn.Module) -> list[nn.Module]:
            if padding == "reflect":
                return [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3), activation]
            return [nn.Conv2d(cin, cout, 3, padding=1), activation]

        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += block(channels, width, nn.ReLU(inplace=True))
            channels = width
        layers += block(channels, out_channels, ACTIVATIONS[output]())
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
    """N, L and R together: `forward(im)` returns `(illumination, reflectance, denoised)`.

    The denoiser N turns the input `im` into X; L and R decompose X into the illumination and the
    reflectance. Each net the arguments build is `depth` [pad, 3x3 conv, ReLU] blocks and an output
    block, as in the paper.

    Args:
        width: Channels of every hidden layer of the built nets (64 in the paper).
        channels: Channels of the input, of X and of R (3 for RGB); L has one.
        depth: [pad, 3x3 conv, ReLU] blocks before each built net's output convolution (4 in the paper).
        padding: `"reflect"` (the paper's) or `"zeros"`, in every built net.
        denoiser_output: N's last activation: `"sigmoid"`, `"relu"` or `"identity"`.
        illumination_output: L's last activation, as above.
        reflectance_output: R's last activation, as above.
        denoiser: A module of your own for N; `None`: built from the arguments above.
        illumination: A module of your own for L (one output channel); `None`: built.
        reflectance: A module of your own for R; `None`: built.
    """

    def __init__(
        self,
        width: int = 64,
        channels: int = 3,
        depth: int = 4,
        padding: str = "reflect",
        denoiser_output: str = "sigmoid",
        illumination_output: str = "sigmoid",
        reflectance_output: str = "sigmoid",
        denoiser: nn.Module | None = None,
        illumination: nn.Module | None = None,
        reflectance: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"model.width must be a positive integer, got {width}")
        self.width, self.channels = width, channels

        def built(name: str, given: nn.Module | None, out_channels: int, output: str) -> nn.Module:
            if given is None:
                return ConvNet(channels, out_channels, width, depth, output, padding)
            if not isinstance(given, nn.Module):
                raise ValueError(
                    f"model.net.{name}: must be null or a module spec with a _target_ naming its class, "
                    f"got a {type(given).__name__} without _target_"
                )
            return given

        self.denoiser = built("denoiser", denoiser, channels, denoiser_output)
        self.illumination = built("illumination", illumination, 1, illumination_output)
        self.reflectance = built("reflectance", reflectance, channels, reflectance_output)
        self.pairlie_spec = {
            "_target_": "pairlie.model.nets.PairLIENet",
            **dict(width=width, channels=channels, depth=depth, padding=padding),
            **dict(denoiser_output=denoiser_output, illumination_output=illumination_output),
            "reflectance_output": reflectance_output,
            **{name: None if given is None else describe(given) for name, given in
               (("denoiser", denoiser), ("illumination", illumination), ("reflectance", reflectance))},
        }  # fmt: skip

    def forward(self, im: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.denoiser(im)
        return self.illumination(x), self.reflectance(x), x

    def reflectance_only(self, im: Tensor) -> Tensor:
        """R of ``im`` without computing its illumination (no paper loss uses L of the second exposure)."""
        return self.reflectance(self.denoiser(im))

    def parts(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.denoiser, self.illumination, self.reflectance

    def forward_flops(self, pixels: int) -> int:
        """FLOPs of ``forward`` on ``pixels`` pixels (batch x height x width); a multiply-add is 2 FLOPs."""
        return 2 * pixels * sum(macs_per_pixel(net) for net in self.parts())

    def training_flops(self, pixels: int, backward: bool = True) -> int:
        """FLOPs of one training step on ``pixels`` pixels per exposure, as the paper's step runs them.

        Forward: N, L, R on the first exposure and N, R on the second. Backward: the weight gradient
        of every conv, and the input gradient of every conv but N's first (the images need none).
        """
        second = 2 * pixels * (macs_per_pixel(self.denoiser) + macs_per_pixel(self.reflectance))
        forward = self.forward_flops(pixels) + second
        if not backward:
            return forward
        first = next((m for m in self.denoiser.modules() if isinstance(m, nn.Conv2d)), None)
        first_macs = conv_macs(first) if first is not None else 0
        # backward = twice the forward, less N's first input gradient on both exposures
        return 3 * forward - 2 * (2 * pixels * first_macs)


def macs_per_pixel(net: nn.Module) -> int:
    """Multiply-adds per output pixel of every ``Conv2d`` in ``net`` (an estimate where strides change the size)."""
    return sum(conv_macs(m) for m in net.modules() if isinstance(m, nn.Conv2d))


def enhance(illumination: Tensor, reflectance: Tensor, gamma: float) -> Tensor:
    """The enhanced image ``I = L**gamma * R``."""
    return torch.pow(illumination, gamma) * reflectance
