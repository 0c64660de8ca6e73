"""How far an output pixel of a net sees into its input: declared by the net, or derived from its layers.

Tiling is exact when every tile carries this many pixels of context. A net says its radius with an
integer attribute ``receptive_radius``; otherwise it is derived where the structure is known
(`PairLIENet` of sequential parts built from the layers below) and is None
where it is not: an unknown layer is never guessed at.
"""

from __future__ import annotations

import math

from torch import nn

from pairlie.model.nets import ConvNet, PairLIENet

# layers that keep the image size and compute each pixel from that pixel alone (in eval mode)
POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
)
# padding layers: they give a convolution its border, not more context
PADS = (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d, nn.ConstantPad2d)


def alignment(net: nn.Module) -> int:
    """The multiple tiles of ``net`` start and end on: the declared ``alignment`` (total stride) of it and its parts, else 1.

    A net that downsamples by 2 twice and upsamples back samples the image on a grid of 4: a tile
    starting elsewhere sees another grid and computes other values. Derived radii are stride 1.
    """
    declared = [getattr(m, "alignment", None) for m in net.modules()]
    return math.lcm(1, *(a for a in declared if isinstance(a, int) and not isinstance(a, bool) and a >= 1))


def min_size(net: nn.Module) -> int:
    """The smallest height and width ``net`` takes: the largest ``min_size`` it or a part declares, else 1."""
    declared = [getattr(m, "min_size", None) for m in net.modules()]
    return max([1, *(s for s in declared if isinstance(s, int) and not isinstance(s, bool) and s >= 1)])


def declares(net: nn.Module) -> bool:
    """Whether any part of ``net`` declares its own ``receptive_radius`` or ``alignment``: a contract to prove, not derived."""
    return any(
        isinstance(getattr(m, name, None), int) for m in net.modules() for name in ("receptive_radius", "alignment")
    )


def receptive_radius(net: nn.Module) -> int | None:
    """Pixels each way an output pixel of ``net`` depends on, or None where ``net`` does not say and its layers do not tell."""
    declared = getattr(net, "receptive_radius", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 0:
        return declared
    if type(net) is PairLIENet:
        radii = [receptive_radius(part) for part in net.parts()]
        if None in radii:
            return None
        return radii[0] + max(radii[1], radii[2])
    if type(net) is ConvNet:
        return sequence_radius(net.layers)
    if type(net) is nn.Sequential:
        return sequence_radius(net)
    return None


def sequence_radius(layers: nn.Sequential) -> int | None:
    """The radius of layers run one after another, each stride 1 and known; None at the first that is not."""
    radius = 0
    for layer in layers:
        if type(layer) is nn.Conv2d:
            # strided: a grid of its own; circular padding: the opposite border is context
            if layer.stride != (1, 1) or layer.padding_mode == "circular":
                return None
            radius += max(d * (k - 1) // 2 for d, k in zip(layer.dilation, layer.kernel_size, strict=True))
        elif type(layer) in POINTWISE or type(layer) in PADS:  # exact types: a subclass may compute more
            continue
        else:
            inner = receptive_radius(layer)
            if inner is None:
                return None
            radius += inner
    return radius


def unknown_layer(net: nn.Module) -> str:
    """The first layer that keeps `receptive_radius` from deriving ``net``'s radius, for messages."""
    for name, module in net.named_modules():
        if module is net or isinstance(module, (nn.Sequential, ConvNet, PairLIENet)):
            continue
        if type(module) is nn.Conv2d and module.stride == (1, 1) and module.padding_mode != "circular":
            continue
        if type(module) not in POINTWISE + PADS:
            return f"{name} ({type(module).__name__})"
    return type(net).__name__
