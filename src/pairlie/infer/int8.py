"""``precision=int8`` on a CPU: calibrated static quantisation of N and L, with R in bf16.

The scheme is the one that measured within 0.05 dB PSNR and 0.003 SSIM of fp32 on LOL-test and
SICE-test (docs/benchmark.md): the ReLU layers of the denoiser N and the illumination net L run in
int8 (oneDNN's int8 kernels: VNNI or AMX where the CPU has them); their last layers and the
reflectance net R, which int8 visibly degrades, run in bf16. Weights are int8, per output channel,
symmetric; activations uint8 per tensor. The image and N's output X enter at a fixed scale of
1/255 (an 8-bit image is then exact); the other activations at scales that torch.ao's histogram
observer calibrates on images like the ones to enhance.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.ao.quantization import HistogramObserver, PerChannelMinMaxObserver

from pairlie.errors import ConfigError, DataError
from pairlie.infer.structure import streamable
from pairlie.io.images import collect_inputs, load_image, to_tensor
from pairlie.model.nets import ConvNet, PairLIENet

# the parts computed in int8 (attribute names of PairLIENet); R stays bf16
INT8_PARTS = ("denoiser", "illumination")
# inputs in [0, 1] (the image, N's sigmoid output): the 8-bit grid
UNIT_SCALE = 1 / 255
# calibration: at most this many images, each at most this many pixels a side (centre crops)
CALIBRATION_IMAGES = 12
CALIBRATION_SIZE = 256


class Int8Conv:
    """One 3x3 convolution and its ReLU in int8: uint8 input at ``scale``, per-channel int8 weights.

    It writes uint8 at ``out_scale`` (the next layer's input scale), or bf16 where ``out_scale``
    is None (the input of the last layer, which runs in bf16). Called as ``layer(x, padding)``, so
    the streaming code runs it as it runs a convolution: the whole band and its reflected rings.
    """

    def __init__(self, conv: torch.nn.Conv2d, scale: float, out_scale: float | None) -> None:
        weight = conv.weight.detach().float()
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        observer(weight)
        self.weight_scale, self.weight_zero = observer.calculate_qparams()
        weight = torch.ops.quantized_decomposed.quantize_per_channel(
            weight, self.weight_scale, self.weight_zero, 0, -128, 127, torch.int8
        )
        self.scale, self.out_scale = float(scale), out_scale
        self.bias = None if conv.bias is None else conv.bias.detach().float()
        self.packed = torch.ops.onednn.qconv_prepack(
            weight, self.weight_scale, self.scale, 0, [1, 1], [1, 1], [1, 1], 1, None
        )

    def __call__(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        bf16 = self.out_scale is None
        return torch.ops.onednn.qconv2d_pointwise(
            x.contiguous(memory_format=torch.channels_last), self.scale, 0, self.packed,
            self.weight_scale, self.weight_zero, self.bias, [1, 1], list(padding), [1, 1], 1,
            1.0 if bf16 else self.out_scale, 0, torch.bfloat16 if bf16 else None, "relu", [], "",
        )  # fmt: skip


def quantize(x: Tensor, scale: float) -> Tensor:
    """``x`` (float, >= 0) as uint8 at ``scale``, zero point 0, channels-last: a layer's int8 input."""
    x = x.float().contiguous(memory_format=torch.channels_last)
    return torch.ops.quantized_decomposed.quantize_per_tensor(x, scale, 0, 0, 255, torch.uint8)


class Int8Net:
    """The ReLU layers of N and L of a `PairLIENet` as `Int8Conv`s, calibrated on ``images``.

    The last layer of each stays in the net's own precision: in int8 its weights cost 0.026 dB and
    0.003 SSIM on LOL-test. ``images``: 3×H×W float tensors in [0, 1] like the ones to enhance
    (low-light photos; `calibration_images` reads and crops them); the first
    `CALIBRATION_IMAGES` are used. ``net`` must be fp32 (the weights are quantised from it).
    """

    def __init__(self, net: PairLIENet, images: Iterable[Tensor]) -> None:
        convs = {name: getattr(net, name).convs()[:-1] for name in INT8_PARTS}  # the ReLU layers
        observers = {
            name: [HistogramObserver(dtype=torch.quint8, reduce_range=False) for _ in c] for name, c in convs.items()
        }
        hooks = [
            conv.register_forward_pre_hook(lambda module, args, observer=observer: observer(args[0].detach()))
            for name in INT8_PARTS
            for conv, observer in zip(convs[name][1:], observers[name][1:], strict=True)  # the first: UNIT_SCALE
        ]
        count = 0
        try:
            with torch.no_grad(), torch.autocast("cpu", enabled=False):
                for image in images:
                    net.illumination(net.denoiser(_crop(image.float())[None]))  # R is not quantised: not run
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
        for name in INT8_PARTS:
            scales = [UNIT_SCALE] + [float(o.calculate_qparams()[0]) for o in observers[name][1:]]
            outs = [*scales[1:], None]  # each layer writes at the next one's scale; the last ReLU layer bf16
            self.layers[name] = [
                Int8Conv(conv, scale, out) for conv, scale, out in zip(convs[name], scales, outs, strict=True)
            ]

    def quantize_input(self, name: str, x: Tensor) -> Tensor:
        """``x`` as the uint8 input of part ``name``'s first int8 layer (at its scale)."""
        return quantize(x, self.layers[name][0].scale)


def _activations(part: ConvNet) -> list[torch.nn.Module]:
    return list(part.layers)[2::3]


@functools.cache
def unavailable() -> str | None:
    """Why oneDNN's int8 convolution cannot run here, or None (checked once per process).

    Both kinds of layer the int8 path runs (uint8 out at a scale, bf16 out), with the paddings its
    rings use, against a float reference on the same quantised weights.
    """
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(8, 8, 3, 3, generator=generator) * 0.2)
    x = torch.randint(0, 256, (1, 8, 6, 7), generator=generator, dtype=torch.uint8)
    weight = conv.weight.detach()
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    for padding in ((1, 1), (1, 0), (0, 0)):
        want = F.conv2d(x.float() * 0.01, (weight / scale).round() * scale, conv.bias.detach(), padding=padding)
        want = torch.relu(want)
        out_scale = float(want.max()) / 200
        try:
            as_bf16 = Int8Conv(conv, 0.01, None)(x, padding).float()
            as_uint8 = Int8Conv(conv, 0.01, out_scale)(x, padding).float() * out_scale
        except (RuntimeError, AttributeError) as error:
            return f"this PyTorch lacks oneDNN's int8 convolution ({str(error).splitlines()[0]})"
        for got, tolerance in ((as_bf16, 0.02), (as_uint8, 0.02 + out_scale / float(want.max()))):
            if got.shape != want.shape or (got - want).abs().max() > tolerance * want.abs().max():
                return "oneDNN's int8 convolution differs from its float reference here"
    return None


def unfit(net: torch.nn.Module) -> str | None:
    """Why the int8 scheme does not apply to ``net``, or None: it is measured for the paper's N and L only."""
    if not streamable(net):
        return "it runs the paper's nets only (a PairLIENet of ReflectionPad2d, 3x3 conv and ReLU blocks)"
    for name in INT8_PARTS:
        activations = _activations(getattr(net, name))
        relus = activations[:-1]
        if (
            not relus
            or type(activations[-1]) is not torch.nn.Sigmoid
            or any(type(a) is not torch.nn.ReLU for a in relus)
        ):
            return f"it needs ReLU layers and a sigmoid output in {name}, as the paper's nets have"
    return None


def calibration_images(items: Iterable | str | Path) -> list[Tensor]:
    """Up to `CALIBRATION_IMAGES` centre crops (3×H×W float tensors, at most `CALIBRATION_SIZE` a side).

    ``items``: a folder (the images in it and below), image paths, PIL images, uint8 or uint16 H×W×3
    arrays, or float tensors 3×H×W or N×3×H×W in [0, 1]. Paths are taken evenly spread; a file that
    cannot be read is passed over and the next one stands in (the enhancing names it). Anything
    else is a one-line ConfigError.
    """
    if isinstance(items, (str, Path)):
        items = [items]
    paths: list[Path] = []
    images: list[Tensor] = []
    for item in items:
        if isinstance(item, (str, Path)):
            path = Path(item).expanduser()
            if not path.exists():
                raise ConfigError(f"calibration={item}: no such file or folder")
            if path.is_dir():
                try:
                    paths += [found for found, _ in collect_inputs(path).items]
                except DataError:
                    raise ConfigError(f"calibration={item}: no images pairlie reads in this folder or below") from None
            else:
                paths.append(path)
        elif isinstance(item, Image.Image):
            images.append(_crop(to_tensor(np.asarray(item.convert("RGB")))))
        elif isinstance(item, np.ndarray):
            if item.dtype not in (np.uint8, np.uint16) or item.ndim != 3 or item.shape[2] != 3:
                raise ConfigError(f"calibration: expected uint8 or uint16 HxWx3 arrays, got {item.dtype} {item.shape}")
            images.append(_crop(to_tensor(item)))
        elif isinstance(item, Tensor):
            batch = item[None] if item.dim() == 3 else item
            if batch.dim() != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
                shape = tuple(item.shape)
                raise ConfigError(f"calibration: expected float 3xHxW or Nx3xHxW tensors, got {item.dtype} {shape}")
            images += [_crop(image.float().cpu()) for image in batch]
        else:
            raise ConfigError(f"calibration: cannot read a {type(item).__name__}; give image paths, a folder or images")
    picked = spread(paths)
    chosen = set(picked)
    for path in picked + [p for p in paths if p not in chosen]:  # the others stand in for broken ones
        if len(images) >= CALIBRATION_IMAGES:
            break
        try:
            images.append(_crop(load_image(path)))
        except DataError:
            continue
    if not images:
        raise ConfigError("calibration: no readable images; give a folder or a few photos like the ones to enhance")
    return images[:CALIBRATION_IMAGES]


def _crop(image: Tensor) -> Tensor:
    """The centre `CALIBRATION_SIZE` square of a 3×H×W image (a copy), at least 2×2 (replicated, as enhancing pads)."""
    top = max(0, (image.shape[-2] - CALIBRATION_SIZE) // 2)
    left = max(0, (image.shape[-1] - CALIBRATION_SIZE) // 2)
    crop = image[..., top : top + CALIBRATION_SIZE, left : left + CALIBRATION_SIZE].clone()
    pad = (0, max(0, 2 - crop.shape[-1]), 0, max(0, 2 - crop.shape[-2]))
    return F.pad(crop[None], pad, mode="replicate")[0] if any(pad) else crop


def spread(paths: list) -> list:
    """At most `CALIBRATION_IMAGES` of ``paths``, evenly spread over them (a folder of scenes gives many scenes)."""
    count = min(CALIBRATION_IMAGES, len(paths))
    return [paths[i * len(paths) // count] for i in range(count)]
