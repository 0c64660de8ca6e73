"""Which number format the nets run in: fp32 (the exact path), bf16 where the CPU computes it natively, fp16/bf16 on CUDA.

A CPU with AVX512_BF16 or AMX computes bf16 dot products at two to several times its fp32 rate;
elsewhere PyTorch emulates bf16, about 50x slower than fp32. ``precision=auto`` therefore takes bf16
only where the CPU has it natively, and never int8 (opt-in: it changes the images more, and needs
calibration images; `pairlie.infer.int8`).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from pairlie.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# the nets' parameters and maps; int8 runs N's and L's ReLU layers in int8, the rest in bf16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.bfloat16}
# /proc/cpuinfo flags of native bf16 and int8 dot products (x86)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "amx_int8", "avx_vnni")
# CPUs without it (AVX2 only) run fp32 in bands with the ReLU fused (fp32_bands)
AVX512_FLAG = "avx512f"
# tests set this to act as another CPU, also in the CLI processes they start: space-separated flags
FLAGS_VARIABLE = "PAIRLIE_CPU_FLAGS"


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model or platform.machine(), flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), or those in ``$PAIRLIE_CPU_FLAGS`` where it is set."""
    override = os.environ.get(FLAGS_VARIABLE)
    if override is not None:
        return frozenset(override.split())
    return _cpuinfo()[1]


def native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512_BF16 or AMX), rather than emulating them."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def native_int8() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512_VNNI, AVX_VNNI or AMX)."""
    return any(flag in cpu_flags() for flag in INT8_FLAGS)


def cpu_description() -> dict:
    """The CPU as benchmarks record it: model name, its bf16/int8 flags, PyTorch's vector capability."""
    flags = cpu_flags()
    return {
        "model": _cpuinfo()[0],
        "flags": sorted(f for f in (*BF16_FLAGS, *INT8_FLAGS) if f in flags),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
        "native_int8": native_int8(),
    }


def resolve(
    precision: str, device: torch.device, conv: str = "auto", half: bool = False, key: str = "precision"
) -> str:
    """``fp32``, ``bf16``, ``fp16`` or ``int8`` for ``precision`` on ``device``; ConfigError, one line, where it cannot run.

    ``auto``: bf16 on a CPU with native bf16, else fp32 (CUDA too: fp16/bf16 there are asked for by
    name). An explicit ``conv=direct|winograd`` names an fp32 algorithm (the exact path, Winograd's),
    so ``auto`` keeps fp32 then. ``half=true`` is the older spelling of ``precision=fp16``.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"{key}={precision!r}: must be one of {', '.join(PRECISIONS)}")
    if half:
        if precision not in ("auto", "fp16"):
            raise ConfigError(f"half=true and {key}={precision}: half=true means {key}=fp16; give only {key}")
        precision = "fp16"
    if precision == "auto":
        return "bf16" if device.type == "cpu" and conv == "auto" and native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        what = "half=true" if half else f"{key}=fp16"
        raise ConfigError(
            f"{what} needs a GPU: 16-bit convolutions on a CPU are slower than fp32; use {key}=bf16 or auto"
        )
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}=bf16 runs on a CPU or CUDA GPU, not {device.type}; use {key}=fp32")
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(f"{key}=int8 is a CPU path; use {key}=fp16 or bf16 on {device.type}")
        # without VNNI/AMX oneDNN sums u8 x s8 pairs in int16, which 8-bit activations can overflow; with 7-bit
        # ones int8 measured 1.2x fp32 on AVX2 and lost 0.012 SSIM / 0.11 dB (docs/benchmark.md): not shipped
        if not native_int8():
            raise ConfigError(
                f"{key}=int8 needs int8 dot-product instructions ({', '.join(INT8_FLAGS)} in /proc/cpuinfo), "
                f"which this CPU lacks (without them int8 measured too slow and too lossy to pay); use {key}=fp32"
            )
        from pairlie.infer.int8 import unavailable

        if reason := unavailable():
            raise ConfigError(f"{key}=int8: {reason}; use {key}=bf16 or fp32")
    if precision != "fp32" and conv == "winograd":
        raise ConfigError(f"conv=winograd computes in fp32 only (NNPACK); use {key}=fp32, or conv=auto for {precision}")
    return precision


def bf16_training_note(precision: str) -> str | None:
    """A warning for ``trainer.precision`` on a CPU where bf16 is emulated, or None (native bf16, or no bf16)."""
    if "bf16" not in str(precision) or native_bf16():
        return None
    return (
        f"trainer.precision={precision} on a CPU without native bf16 (no {' or '.join(BF16_FLAGS)}): "
        "PyTorch emulates it, ~50x slower than 32-true"
    )


@functools.cache
def _fused_relu_reason(dtype: torch.dtype = torch.bfloat16) -> str | None:
    """Why oneDNN's convolution with a fused ReLU cannot run here in ``dtype``, or None (checked once per process).

    fp32 is probed at the nets' width (64 channels) and on two images: torch runs small fp32 convolutions
    of one image through another kernel than oneDNN's, which sums in another order.
    """
    batch, channels = (2, 64) if dtype == torch.float32 else (1, 8)
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(batch, channels, 6, 7, generator=generator).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = (torch.randn(channels, channels, 3, 3, generator=generator) * 0.3).to(dtype)
        bias = torch.randn(channels, generator=generator).to(dtype)
        got = conv2d_relu(x, weight, bias, (0, 1))
    except (RuntimeError, AttributeError) as error:
        return f"oneDNN's fused convolution failed: {str(error).splitlines()[0]}"
    want = torch.relu(torch.nn.functional.conv2d(x, weight, bias, padding=(0, 1)))
    if got.shape != want.shape or not torch.equal(got, want):
        return "oneDNN's fused convolution differs from conv2d + relu"
    return None


def fuses_relu(dtype: torch.dtype) -> bool:
    """Whether `conv2d_relu` runs fused for maps of ``dtype``: bf16, where oneDNN's fused op passes its probe.

    In bf16 a separate ReLU pass over a band costs half as much as the convolution itself (measured
    on AMX); fp32 keeps today's exact path.
    """
    return dtype == torch.bfloat16 and _fused_relu_reason() is None


def fp32_bands() -> bool:
    """Whether fp32 runs in bands, each ReLU fused into oneDNN's convolution: a CPU without AVX-512, the probe passing.

    The same convolutions as the row stream's (the bands equal the plain net's forward bit for bit on
    the official weights; the fused ReLU is probed against a separate one once per process), with
    fewer, larger passes over the maps: on AVX2 it measured faster than the row stream
    (docs/benchmark.md). AVX-512 CPUs keep the row stream.
    """
    return AVX512_FLAG not in cpu_flags() and _fused_relu_reason(torch.float32) is None


def conv2d_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]):
    """``relu(conv2d(x, weight, bias, padding=padding))`` in one oneDNN call (stride 1): check `fuses_relu` first."""
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), [1, 1], [1, 1], 1, "relu", [], "")
