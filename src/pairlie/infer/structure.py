"""What a net is made of: whether it has the paper's structure, the condition every fast path checks first.

The streamed rows, bands, Winograd and int8 paths compute the paper's nets exactly; they apply only
where `streamable` proves a net is built like them. Exact types are required throughout: a
subclass may change ``forward``.
"""

from __future__ import annotations

import torch

from pairlie.infer import winograd
from pairlie.model.nets import ConvNet, PairLIENet

# the activations the fast paths compute (anything else is never guessed at)
STREAM_ACTIVATIONS = (torch.nn.ReLU, torch.nn.Sigmoid)


def streamable(net: torch.nn.Module) -> bool:
    """Whether `stream` and `forward` compute ``net`` exactly: a `PairLIENet` whose N, L and R are
    `ConvNet`s of [ReflectionPad2d(1), 3x3 stride-1 Conv2d, ReLU or Sigmoid] blocks, N feeding L and R.

    Exact types are required: a subclass may change ``forward``.
    """
    if type(net) is not PairLIENet or any(type(part) is not ConvNet for part in net.parts()):
        return False
    try:
        for part in net.parts():
            _layers(part)
    except ValueError:
        return False
    out = net.denoiser.convs()[-1].out_channels
    return net.illumination.convs()[0].in_channels == out == net.reflectance.convs()[0].in_channels


def _layers(net: ConvNet) -> list[tuple[torch.nn.Conv2d, bool]]:
    """(conv, ends with ReLU) for each [ReflectionPad2d(1), conv, activation] of ``net``."""
    layers = list(net.layers)
    pads, convs, acts = layers[::3], layers[1::3], layers[2::3]
    if (
        not layers
        or len(layers) % 3
        or any(type(p) is not torch.nn.ReflectionPad2d or tuple(p.padding) != (1, 1, 1, 1) for p in pads)
    ):
        raise ValueError("expected [ReflectionPad2d(1), Conv2d, activation] blocks")
    if not all(winograd.plain_3x3(conv) for conv in convs):
        raise ValueError("the streamed path runs 3x3, stride-1, unpadded, ungrouped convolutions only")
    for act in acts:
        if type(act) not in STREAM_ACTIVATIONS:  # never guess what another activation computes
            raise ValueError(f"the streamed path runs ReLU and Sigmoid only, not {type(act).__name__}")
    return [(conv, type(act) is torch.nn.ReLU) for conv, act in zip(layers[1::3], layers[2::3], strict=True)]
