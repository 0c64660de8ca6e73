"""Winograd convolutions on CPUs through NNPACK, which every PyTorch CPU wheel ships, with the exact path as fallback.

97 % of PairLIE's multiply-adds are 3x3, stride-1 convolutions, where Winograd's algorithm needs
several times fewer multiplies than a direct convolution. NNPACK computes them on its own thread
pool, while the rest of PyTorch runs on OpenMP, whose idle threads spin for milliseconds after each
parallel region and take the cores NNPACK's threads need: `sharing_cores` makes the two take
turns instead. Results equal direct convolution up to float rounding (about 1e-5 relative), tested.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from pairlie.errors import ConfigError

log = logging.getLogger("pairlie")

CONV_MODES = ("auto", "winograd", "direct")
# a probe result further than this from direct convolution (relative) means a broken build
PROBE_TOLERANCE = 1e-4
# conv=auto takes Winograd where one wide layer measures at least this much faster than oneDNN's
# direct kernel: in a whole network the NCHW layout it needs costs the thin layers and the copies
# between layers some 10-20 % of that gain
AUTO_MIN_SPEEDUP = 1.25


@functools.cache
def unavailable_reason() -> str | None:
    """Why Winograd convolutions cannot run here, or None when they can (checked once per process).

    Initialises NNPACK (its calls fail until then), creates its thread pool while PyTorch still has
    its full thread count (the pool keeps the size it is created with), and checks a small
    convolution against the direct one.
    """
    try:
        if not torch.backends.nnpack.is_available():
            return "this PyTorch build or CPU has no NNPACK"
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(1, 8, 9, 11, generator=generator)
        weight = torch.randn(8, 8, 3, 3, generator=generator)
        bias = torch.randn(8, generator=generator)
        got = torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    except (RuntimeError, AttributeError) as error:
        return f"NNPACK failed: {str(error).splitlines()[0]}"
    want = F.conv2d(x, weight, bias, padding=1)
    difference = float((got - want).abs().max() / want.abs().max())
    if not difference <= PROBE_TOLERANCE:
        return f"NNPACK computed a test convolution wrong (relative difference {difference:.1e})"
    return None


def resolve(conv: str, device: torch.device, key: str = "conv") -> str:
    """``winograd`` or ``direct`` for ``conv=auto|winograd|direct`` on ``device``; ConfigError where Winograd is asked but cannot run."""
    if conv not in CONV_MODES:
        raise ConfigError(f"{key}={conv!r}: must be auto, winograd or direct")
    if conv == "direct":
        return "direct"
    reason = "it is a CPU path (NNPACK)" if device.type != "cpu" else unavailable_reason()
    if reason is not None and conv == "winograd":
        raise ConfigError(f"{key}=winograd: not available on {device.type}: {reason}; use {key}=auto or {key}=direct")
    if reason is not None:
        log.debug("%s=auto: direct convolutions, Winograd is not available (%s)", key, reason)
        return "direct"
    if conv == "winograd":
        return "winograd"
    speedup = measured_speedup()
    chosen = "winograd" if speedup >= AUTO_MIN_SPEEDUP else "direct"
    log.debug("%s=auto: %s convolutions (Winograd measured %.2fx direct on this CPU)", key, chosen, speedup)
    return chosen


@functools.cache
def measured_speedup() -> float:
    """How many times faster one 64->64 layer runs by Winograd than directly here, on a cache-sized band; measured once per process.

    About 0.3 s. Winograd's gain depends on the CPU: the same wheel measured 1.7x on one day's
    2-core AVX2 machine and 1.1x on another's, where the direct path is faster in a whole network.
    """
    if unavailable_reason() is not None:  # also creates NNPACK's pool before sharing_cores shrinks OpenMP
        return 0.0
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, 98, 600, generator=generator)
    weight = torch.randn(64, 64, 3, 3, generator=generator) * 0.05
    x_last, weight_last = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))

    def fastest(run) -> float:
        run()  # warm-up: workspaces, kernels chosen
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    direct = fastest(lambda: F.conv2d(x_last, weight_last, None, padding=(0, 1)))
    with sharing_cores():
        fast = fastest(lambda: conv2d(x, weight, None, (0, 1)))
    return direct / fast


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """A stride-1 convolution of a float32 NCHW CPU tensor by Winograd's algorithm (NNPACK)."""
    return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, list(padding))


class _Conv(torch.autograd.Function):
    """A 3x3 stride-1 unpadded convolution whose forward and input gradient run by Winograd's algorithm.

    The input gradient of a valid convolution is a full convolution of the output gradient with the
    kernels flipped and in/out swapped: again 3x3 and stride 1. The weight gradient, a correlation
    with a kernel the size of the image, stays a direct convolution.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return conv2d(x, weight, bias, (0, 0))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d(grad, weight.flip(2, 3).transpose(0, 1).contiguous(), None, (2, 2))
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            mask = [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
            _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
            )
        return grad_x, grad_weight, grad_bias


def conv2d_trainable(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.conv2d(x, weight, bias)`` (3x3, unpadded) with Winograd forward and input gradient where they can run, else direct."""
    if x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
        return _Conv.apply(x, weight, bias)
    return F.conv2d(x, weight, bias)


_turns = threading.local()


@contextlib.contextmanager
def sharing_cores() -> Iterator[None]:
    """Let NNPACK's thread pool and PyTorch's OpenMP threads take turns on the cores, not fight over them.

    NNPACK's pool holds as many threads as PyTorch had when it was created (see
    `unavailable_reason`). Inside this block OpenMP runs on the calling thread only, so no
    OpenMP thread spins through a convolution on NNPACK's cores; what runs on OpenMP between the
    convolutions is elementwise and memory-bound. Nested blocks are one block.
    """
    if getattr(_turns, "depth", 0):
        _turns.depth += 1
        try:
            yield
        finally:
            _turns.depth -= 1
        return
    threads = torch.get_num_threads()
    _turns.depth = 1
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _turns.depth = 0


def plain_3x3(conv: torch.nn.Module) -> bool:
    """Whether ``conv`` is a 3x3, stride-1, unpadded, undilated, ungrouped Conv2d: what NNPACK's path computes."""
    return (
        type(conv) is torch.nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


def runs(net: torch.nn.Module) -> bool:
    """Whether `run_net` applies to ``net``: a sequence in ``net.layers`` with at least one plain 3x3 conv."""
    layers = getattr(net, "layers", None)
    return isinstance(layers, torch.nn.Sequential) and any(plain_3x3(layer) for layer in layers)


def run_net(net: torch.nn.Module, x: Tensor) -> Tensor:
    """``net(x)`` for a net whose ``layers`` run in sequence, its plain 3x3 convolutions by `conv2d_trainable`.

    Any other layer (a padded, strided or grouped conv included) runs as it is.
    """
    for layer in net.layers:
        if plain_3x3(layer):
            x = conv2d_trainable(x, layer.weight, layer.bias)
        else:
            x = layer(x)
    return x
