"""Exact inference paths without padded copies of feature maps: rows streamed in bands (CPU), tiles split for any device.

Both compute what ``PairLIENet.forward`` computes (reflection padding at the image borders), up to
float rounding, and are tested against it. They apply only where `streamable` proves the
net has the paper's structure; any other net runs whole or in tiles (`pairlie.infer.enhancer`).
"""

from __future__ import annotations

import functools
from itertools import pairwise
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from pairlie.infer import precision as precisions
from pairlie.infer import winograd
from pairlie.infer.structure import STREAM_ACTIVATIONS, _layers, streamable  # noqa: F401  (streamable: also read from here)
from pairlie.model.nets import PairLIENet

if TYPE_CHECKING:
    from pairlie.infer.int8 import Int8Net

# the activations the streamed layers apply after a convolution

# rows per band when streaming: about this many pixels, which keeps a 64-channel band in the caches
BAND_PIXELS = 65536
WINOGRAD_BAND_PIXELS = 65536
# Winograd only pays on layers with many outputs: on 64->3 and 64->1 NNPACK measured 1.8x slower than
# a direct convolution in the same (NCHW) layout; on 3->64 2.3x faster (oneDNN is faster still in
# channels-last, but converting the 64-channel output to NCHW costs more than that)
WINOGRAD_MIN_CHANNELS = 8  # the nets' widths (64; tests use 8), not their 1-3 channel outputs
# bf16 bands (banded): about this many pixels and at least this many rows, so that the recomputed
# margin stays a few percent of a band (600x400 is one band)
BF16_BAND_PIXELS = 1 << 19
BF16_BAND_ROWS = 256
# images wider than this are streamed in column pieces (each with the receptive radius of context)
STREAM_WIDTH = 2048

Borders = tuple[bool, bool, bool, bool]  # (top, bottom, left, right): which sides are image borders


def split(length: int, tile: int, margin: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """Equal pieces of about ``tile`` covering ``range(length)``: (start, end, start - margin, end + margin), clipped.

    ``align`` (a net's total stride): every piece and its context start, and end unless at
    ``length``, on a multiple of it, so a tile sees the whole image's sampling grid; the margin is
    rounded up to a multiple of it.
    """
    count = -(-length // tile)
    edges = [round(i * length / count) for i in range(count + 1)]
    if align > 1:
        inner = {align * round(e / align) for e in edges[1:-1]}
        edges = [0, *sorted(e for e in inner if 0 < e < length), length]
        margin = -(-margin // align) * align
    return [(a, b, max(a - margin, 0), min(b + margin, length)) for a, b in pairwise(edges)]


def conv_reflect(
    x: Tensor,
    conv: torch.nn.Conv2d,
    borders: Borders,
    rows_padded: bool = False,
    fast: bool = False,
    relu: bool = False,
) -> Tensor:
    """``conv(reflection_pad(x))`` on the image borders named, without a padded copy of ``x``.

    oneDNN pads with zeros inside the convolution for free; only the one-pixel rings on image
    borders differ from reflection padding, and they are recomputed from three-pixel strips. On a
    side inside the image the zero ring only reaches context that the caller discards (one pixel
    per layer). ``rows_padded``: ``x`` already holds the rows above and below (streaming).
    ``fast``: the convolution by Winograd's algorithm (`pairlie.infer.winograd`) where it pays
    (`winograd_pays`), the rings direct. ``relu``: the ReLU fused into the convolution
    (`pairlie.infer.precision.conv2d_relu`; only where `pairlie.infer.precision.fuses_relu`).
    """
    if isinstance(conv, torch.nn.Conv2d):
        weight, bias = conv.weight, conv.bias
        if x.dtype != weight.dtype:  # bf16 nets: the denoised X comes out of N in fp32 (_activate)
            x = x.to(weight.dtype)
        if relu:
            apply = functools.partial(precisions.conv2d_relu, weight=weight, bias=bias)
        else:
            apply = functools.partial(_conv, weight=weight, bias=bias)
    else:  # an int8 layer (pairlie.infer.int8.Int8Conv): its ReLU and output scale inside
        apply = conv
    padding = (0 if rows_padded else 1, 1)
    if fast and winograd_pays(conv):
        y = winograd.conv2d(x, conv.weight, conv.bias, padding)
    else:
        y = apply(x, padding=padding)
    height, width = x.shape[-2:]
    top, bottom, left, right = borders
    # the rings, each side's from its reflected three-pixel strip: both columns in one convolution,
    # then both rows (which overwrite the corners: the column strips are zero-padded above and below)
    columns = ([1, 0, 1] if left else []) + ([width - 2, width - 1, width - 2] if right else [])
    if columns:
        out = apply(_strip(x, 3, columns), padding=(0 if rows_padded else 1, 0))
        if left:
            y[..., :1] = out[..., :1]
        if right:
            y[..., -1:] = out[..., -1:]
    rows = ([1, 0, 1] if top else []) + ([height - 2, height - 1, height - 2] if bottom else [])
    if rows and not rows_padded:
        out = apply(_strip(_strip(x, 2, rows), 3, [1, *range(width), width - 2]), padding=(0, 0))
        if top:
            y[..., :1, :] = out[..., :1, :]
        if bottom:
            y[..., -1:, :] = out[..., -1:, :]
    return y


def _strip(x: Tensor, dim: int, picks: list[int]) -> Tensor:
    """``x.index_select(dim, picks)`` as one concatenation of slices: runs of consecutive indices are one slice.

    Concatenating keeps channels-last (an index does not), and costs a seventh of an index on a
    600-row ring (measured): the convolution then reads it without another copy.
    """
    runs: list[tuple[int, int]] = []
    for i in picks:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return torch.cat([x.narrow(dim, start, length) for start, length in runs], dim=dim)


def _conv(x: Tensor, padding: tuple[int, int], weight: Tensor, bias: Tensor | None) -> Tensor:
    return F.conv2d(x, weight, bias, padding=padding)


def winograd_pays(conv: torch.nn.Conv2d) -> bool:
    """Whether ``conv`` runs faster by Winograd's algorithm than directly on NCHW maps: many outputs."""
    return conv.out_channels >= WINOGRAD_MIN_CHANNELS


def layout(fast: bool) -> torch.memory_format:
    """The layout of every map: NCHW for NNPACK (``fast``), channels-last for oneDNN's direct kernels."""
    return torch.contiguous_format if fast else torch.channels_last


def _activate(y: Tensor, relu: bool) -> Tensor:
    # the nets' outputs in fp32 whatever the convolutions ran in (bf16 would round them to 8 bits)
    return torch.relu_(y) if relu else torch.sigmoid_(y.float())


def _fuses(dtype: torch.dtype) -> bool:
    """Whether layers of ``dtype`` run their ReLU inside the convolution: bf16, and fp32 where it runs in bands."""
    if dtype == torch.float32:
        return precisions.fp32_bands()
    return precisions.fuses_relu(dtype)


def forward(
    net: PairLIENet,
    x: Tensor,
    borders: Borders = (True, True, True, True),
    fast: bool = False,
    trim: bool = False,
    int8: Int8Net | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``net(x)`` (illumination, reflectance, denoised) with `conv_reflect` for every layer.

    bf16 nets run their ReLUs fused into the convolutions (`pairlie.infer.precision.fuses_relu`), fp32
    nets too where `pairlie.infer.precision.fp32_bands` (an AVX2 CPU): the same numbers either way.
    ``trim``: after each layer, drop the output row on each side of ``x`` that is not an image
    border (the one its zero padding reached), so no layer computes rows that are discarded
    anyway; the denoised map then lacks N's depth of rows on those sides, L and R N's plus their own.
    ``int8``: the parts it holds run its int8 layers (`pairlie.infer.int8`); give ``x`` in fp32 then.
    """
    top, bottom = borders[:2]

    def run(name: str, h: Tensor) -> Tensor:
        layers = _layers(getattr(net, name))
        steps = [(conv, relu, relu and not fast and _fuses(conv.weight.dtype)) for conv, relu in layers]
        if int8 is not None and name in int8.layers:  # its int8 ReLU layers, then the net's own last layer
            h = int8.quantize_input(name, h)
            steps = [(layer, True, True) for layer in int8.layers[name]] + steps[len(int8.layers[name]) :]
        for conv, relu, fused in steps:
            h = h.contiguous(memory_format=layout(fast))
            h = conv_reflect(h, conv, borders, fast=fast, relu=fused)
            if trim:
                h = h[..., (0 if top else 1) : h.shape[2] - (0 if bottom else 1), :]
            h = h if fused else _activate(h, relu)
        return h

    denoised = run("denoiser", x)
    inputs = denoised.to(net.reflectance.convs()[0].weight.dtype)  # converted once for L and R
    illumination = run("illumination", denoised if int8 is not None and "illumination" in int8.layers else inputs)
    return illumination, run("reflectance", inputs), denoised


@torch.no_grad()
def banded(
    net: PairLIENet, image: Tensor, device: torch.device, dtype: torch.dtype, margin: int, int8: Int8Net | None = None
) -> tuple[Tensor, ...]:
    """(illumination, reflectance, denoised) of an N×3×H×W image in bands of rows, each computed on its own.

    The bf16 and int8 paths on a CPU, and fp32's where `pairlie.infer.precision.fp32_bands` (AVX2).
    A band is computed with `forward` from its rows plus ``margin``
    rows of context above and below (at least the nets' receptive radius), trimmed layer by layer,
    so it recomputes about ``margin`` rows of work per band and copies no feature map of a single
    image (a batch's trimmed maps are copied): in bf16 the
    row stream's copies of each layer's input (`stream`) cost a sixth of the time (measured
    on AMX). Bands hold ``BF16_BAND_PIXELS`` pixels and at least ``BF16_BAND_ROWS`` rows; images
    wider than ``STREAM_WIDTH`` are cut into column pieces with ``margin`` pixels of context.
    ``int8``: N and L in int8 (`pairlie.infer.int8`), R in ``dtype``.
    """
    n, _, height, width = image.shape
    parts = (net.illumination, net.reflectance, net.denoiser)
    outputs = [torch.empty(n, part.convs()[-1].out_channels, height, width) for part in parts]
    depth = len(net.denoiser.convs())
    trimmed = [depth + len(net.illumination.convs()), depth + len(net.reflectance.convs()), depth]
    if margin < max(trimmed):
        raise ValueError(f"margin {margin} is less than the nets' receptive radius {max(trimmed)}")
    pieces = split(width, STREAM_WIDTH, margin) if width > STREAM_WIDTH else [(0, width, 0, width)]
    for left, right, cleft, cright in pieces:
        rows = max(BF16_BAND_ROWS, BF16_BAND_PIXELS // (cright - cleft))
        for top, bottom, ctop, cbottom in split(height, rows, margin):
            borders = (ctop == 0, cbottom == height, cleft == 0, cright == width)
            patch = image[..., ctop:cbottom, cleft:cright].to(device, torch.float32 if int8 else dtype)
            patch = patch.contiguous(memory_format=torch.channels_last)  # int8: N quantises the fp32 image
            results = forward(net, patch, borders, trim=True, int8=int8)
            for full, out, lost in zip(outputs, results, trimmed, strict=True):
                first = ctop + (0 if borders[0] else lost)  # the image row of out's first row
                inner = out[..., top - first : bottom - first, left - cleft : right - cleft]
                full[..., top:bottom, left:right] = inner.float().cpu()
    return tuple(outputs)


class _RowStream:
    """One layer fed rows top to bottom: each output row is computed once, from the rows kept above it."""

    def __init__(self, conv: torch.nn.Conv2d, relu: bool, left: bool, right: bool, fast: bool) -> None:
        self.conv, self.relu, self.borders, self.fast = conv, relu, (False, False, left, right), fast
        self.layout = layout(fast)
        self.rows: Tensor | None = None  # input rows not yet consumed (the last two, once started)
        self.started = False

    def push(self, new: Tensor, last: bool, relu: bool) -> Tensor | None:
        """This layer's output for the next rows ``new`` (before its ReLU if it has one), or None until it has three rows.

        ``relu``: ``new`` has yet to go through the ReLU of the layer below, which is applied while
        it is copied in after the kept rows (one pass over the band instead of two).
        """
        kept = 0 if self.rows is None else self.rows.shape[2]
        count = kept + new.shape[2]
        if not self.started and count < 2 and not last:
            self.rows = torch.relu(new) if relu else new
            return None
        top, bottom = (0 if self.started else 1), (1 if last else 0)  # reflected rows above and below the image
        shape = (new.shape[0], new.shape[1], top + count + bottom, new.shape[3])
        rows = torch.empty(shape, dtype=new.dtype, device=new.device, memory_format=self.layout)
        if kept:
            rows[:, :, top : top + kept] = self.rows
        if relu:
            torch.clamp_min(new, 0, out=rows[:, :, top + kept : top + count])
        else:
            rows[:, :, top + kept : top + count] = new
        if top:
            rows[:, :, 0] = rows[:, :, 2]
        if bottom:
            rows[:, :, -1] = rows[:, :, -3]
        self.started = True
        if rows.shape[2] < 3:
            self.rows = rows
            return None
        self.rows = rows[:, :, -2:].clone()  # a copy: a view would keep the whole band alive
        y = conv_reflect(rows, self.conv, self.borders, rows_padded=True, fast=self.fast)
        return y if self.relu else torch.sigmoid_(y.float())  # fp32 outputs, as _activate


def _push(chain: list[_RowStream], rows: Tensor | None, last: bool) -> Tensor | None:
    """The chain's output for the next rows (each layer applies the ReLU of the one below), or None."""
    relu = False
    for layer in chain:
        if rows is None:
            return None
        rows = layer.push(rows, last, relu)
        relu = layer.relu
    return torch.relu_(rows) if relu and rows is not None else rows


@torch.no_grad()  # inference only: the activations are written into the next layer's input
def stream(
    net: PairLIENet, image: Tensor, device: torch.device, dtype: torch.dtype, margin: int, fast: bool = False
) -> tuple[Tensor, ...]:
    """(illumination, reflectance, denoised) of an N×3×H×W image (H ≥ 2, W ≥ 2), rows streamed in bands.

    The fp32 path on a CPU with AVX-512, and Winograd's (bf16, int8 and direct fp32 on an AVX2 CPU
    run `banded`). Every layer keeps the two input rows it still needs, so no pixel is computed twice and only a
    band of each feature map is alive at a time (memory independent of the image height). Images
    wider than ``STREAM_WIDTH`` are cut into column pieces with ``margin`` pixels of context.
    ``fast``: the wide convolutions by Winograd's algorithm, on NCHW bands (NNPACK's layout).
    """
    n, _, height, width = image.shape
    channels = [part.convs()[-1].out_channels for part in (net.illumination, net.reflectance, net.denoiser)]
    outputs = [torch.empty(n, c, height, width) for c in channels]
    pieces = split(width, STREAM_WIDTH, margin) if width > STREAM_WIDTH else [(0, width, 0, width)]
    for left, right, cleft, cright in pieces:
        sides = (cleft == 0, cright == width)
        chains = [
            [_RowStream(conv, relu, *sides, fast) for conv, relu in _layers(part)]
            for part in (net.denoiser, net.illumination, net.reflectance)
        ]
        band = max(2, (WINOGRAD_BAND_PIXELS if fast else BAND_PIXELS) // (cright - cleft))
        filled = [0, 0, 0]
        for top in range(0, height, band):
            last = top + band >= height
            rows = image[..., top : top + band, cleft:cright]
            # blocking: a non-blocking copy from a GPU image would be read before it arrived
            rows = rows.to(device, dtype).contiguous(memory_format=layout(fast))
            denoised = _push(chains[0], rows, last)
            results = (_push(chains[1], denoised, last), _push(chains[2], denoised, last), denoised)
            for i, (full, out) in enumerate(zip(outputs, results, strict=True)):
                if out is not None:
                    count = out.shape[2]
                    full[..., filled[i] : filled[i] + count, left:right] = (
                        out[..., left - cleft : right - cleft].float().cpu()
                    )
                    filled[i] += count
        if filled != [height] * 3:
            raise AssertionError(f"streaming filled {filled} of {height} rows")
    return tuple(outputs)
