"""What the CPU runtimes share: pairlie's model as ``pairlie-export`` writes it, and the runtime's module."""

from __future__ import annotations

import importlib
import os

import torch

from bench.column import BENCH_EXTRA, GAMMA, Unavailable, official_net

# --as-avx2: what makes torch's kernels and pairlie's CPU checks act as on an AVX2-only CPU
AS_AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "PAIRLIE_CPU_FLAGS": "sse4_1 sse4_2 avx avx2 fma f16c",
}


def onnx_model() -> bytes:
    """The official net as pairlie-export builds it: N/H/W dynamic, reflection padding inside, γ 0.2."""
    from pairlie.deploy.export import DEFAULT_OPSET, contract, to_onnx
    from pairlie.errors import ConfigError

    try:
        return to_onnx(official_net(), GAMMA, DEFAULT_OPSET, "enhanced", contract(GAMMA, "enhanced"))
    except ConfigError:
        raise Unavailable(f"onnx is not installed ({BENCH_EXTRA})") from None


def cpu_runtime(device: torch.device, name: str):
    """The module of the runtime ``name``; :class:`Unavailable` off the CPU or where it is not installed."""
    if device.type != "cpu":
        raise Unavailable(f"a CPU runtime; this run is on {device}")
    if os.environ.get("ONEDNN_MAX_CPU_ISA") == AS_AVX2["ONEDNN_MAX_CPU_ISA"]:
        raise Unavailable(f"{name} has no switch to run as on an AVX2 CPU (--as-avx2): measure it on one")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise Unavailable(f"{name} is not installed ({BENCH_EXTRA})") from None
