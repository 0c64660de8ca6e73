"""``precision=int8`` on a CPU: calibrated static quantisation of N and L, with R in bf16.

The scheme is the one that measured within 0.05 dB PSNR and 0.003 SSIM of fp32 on LOL-test and
SICE-test (``scripts/int8_study.py``; docs/benchmark.md): every convolution of the denoiser N and
the illumination net L runs in int8 (oneDNN's int8 kernels: VNNI or AMX where the CPU has them),
the reflectance net R in bf16, which int8 visibly degrades. Weights are int8, per output channel,
symmetric; activations uint8 per tensor. The image and N's output X enter at a fixed scale of
1/255 (an 8-bit image is then exact); the ReLU activations at scales that torch.ao's histogram
observer calibrates on images like the ones to enhance. ReLU layers write uint8 at the next
layer's scale; the last layer writes fp32 for the sigmoid.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.ao.quantization import HistogramObserver, PerChannelMinMaxObserver

from pairlie.nets import ConvNet, PairLIENet

# the parts computed in int8 (attribute names of PairLIENet); R stays bf16
INT8_PARTS = ("denoiser", "illumination")
# inputs in [0, 1] (the image, N's sigmoid output): the 8-bit grid
UNIT_SCALE = 1 / 255
# calibration: at most this many images, each at most this many pixels a side (centre crops)
CALIBRATION_IMAGES = 8
CALIBRATION_SIZE = 512


class Int8Conv:
    """One 3x3 convolution in int8: uint8 input at ``scale``, per-channel int8 weights.

    A ReLU layer writes uint8 at ``out_scale`` (the next layer's input scale); the last layer
    (``out_scale=None``) writes fp32, for the sigmoid. Called as ``layer(x, padding)``, so the
    streaming code runs it as it runs a convolution: the whole band and its reflected rings.
    """

    def __init__(self, conv: torch.nn.Conv2d, scale: float, relu: bool, out_scale: float | None) -> None:
        weight = conv.weight.detach().float()
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        observer(weight)
        self.weight_scale, self.weight_zero = observer.calculate_qparams()
        weight = torch.quantize_per_channel(weight, self.weight_scale, self.weight_zero, 0, torch.qint8).int_repr()
        self.scale, self.relu, self.out_scale = float(scale), relu, out_scale
        self.bias = None if conv.bias is None else conv.bias.detach().float()
        self.packed = torch.ops.onednn.qconv_prepack(
            weight, self.weight_scale, self.scale, 0, [1, 1], [1, 1], [1, 1], 1, None
        )

    def __call__(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        last = self.out_scale is None
        return torch.ops.onednn.qconv2d_pointwise(
            x.contiguous(memory_format=torch.channels_last), self.scale, 0, self.packed, self.weight_scale, self.weight_zero, self.bias,
            [1, 1], list(padding), [1, 1], 1,
            1.0 if last else self.out_scale, 0, torch.float32 if last else None,
            "relu" if self.relu else "none", [], "",
        )  # fmt: skip


def quantize(x: Tensor, scale: float) -> Tensor:
    """``x`` (float, >= 0) as uint8 at ``scale``, zero point 0, channels-last: a layer's int8 input."""
    q = torch.quantize_per_tensor(x.float(), scale, 0, torch.quint8).int_repr()
    return q.contiguous(memory_format=torch.channels_last)


class Int8Net:
    """N and L of a :class:`PairLIENet` as :class:`Int8Conv` layers, calibrated on ``images``.

    ``images``: N×3×H×W or 3×H×W float tensors in [0, 1] like the ones to enhance (low-light
    photos); the first :data:`CALIBRATION_IMAGES` are used, centre-cropped to
    :data:`CALIBRATION_SIZE`. ``net`` must be fp32 (the weights are quantised from it).
    """

    def __init__(self, net: PairLIENet, images: Iterable[Tensor]) -> None:
        parts = {name: getattr(net, name) for name in INT8_PARTS}
        convs = {name: part.convs() for name, part in parts.items()}
        observers = {name: [HistogramObserver(dtype=torch.quint8, reduce_range=False) for _ in c] for name, c in convs.items()}
        hooks = [
            conv.register_forward_pre_hook(lambda module, args, observer=observer: observer(args[0].detach()))
            for name in INT8_PARTS
            for conv, observer in zip(convs[name][1:], observers[name][1:], strict=True)  # the first: UNIT_SCALE
        ]
        count = 0
        try:
            with torch.no_grad(), torch.autocast("cpu", enabled=False):
                for image in images:
                    batch = image[None] if image.dim() == 3 else image
                    top = max(0, (batch.shape[-2] - CALIBRATION_SIZE) // 2)
                    left = max(0, (batch.shape[-1] - CALIBRATION_SIZE) // 2)
                    crop = batch[..., top : top + CALIBRATION_SIZE, left : left + CALIBRATION_SIZE]
                    net(crop.float().to(next(net.parameters()).device))
                    count += 1
                    if count == CALIBRATION_IMAGES:
                        break
        finally:
            for hook in hooks:
                hook.remove()
        if not count:
            raise ValueError("no calibration images")
        self.calibrated = count
        self.layers: dict[str, list[Int8Conv]] = {}
        for name, part in parts.items():
            scales = [UNIT_SCALE] + [float(o.calculate_qparams()[0]) for o in observers[name][1:]]
            relus = [type(layer) is torch.nn.ReLU for layer in _activations(part)]
            self.layers[name] = [
                Int8Conv(conv, scale, relu, scales[i + 1] if relu else None)
                for i, (conv, scale, relu) in enumerate(zip(convs[name], scales, relus, strict=True))
            ]


def _activations(part: ConvNet) -> list[torch.nn.Module]:
    return list(part.layers)[2::3]


def unfit(net: torch.nn.Module) -> str | None:
    """Why the int8 scheme does not apply to ``net``, or None: it is measured for the paper's N and L only."""
    from pairlie.streaming import streamable

    if not streamable(net):
        return "it runs the paper's nets only (PairLIENet of ReflectionPad2d/3x3 conv/ReLU blocks)"
    for name in INT8_PARTS:
        activations = _activations(getattr(net, name))
        if type(activations[-1]) is not torch.nn.Sigmoid or any(type(a) is not torch.nn.ReLU for a in activations[:-1]):
            return f"it needs ReLU layers and a sigmoid output in {name}, as the paper's"
    return None
