#!/usr/bin/env python
"""pairlie on an AVX2-only CPU (issue 30): fp32 paths, 7-bit int8 schemes and Winograd against the fp32 row stream; prints one JSON object.

    python scripts/avx2_study.py [--isa avx2|native] [--parts fp32,int8,winograd] [--rounds 7] [--data ../shared/data]

``--isa avx2`` (the default) reruns the script with ``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2`` and ``PAIRLIE_CPU_FLAGS="avx avx2 fma"``: on a CPU with AVX-512
PyTorch's and oneDNN's kernels then run as on an AVX2-only one (no VNNI, bf16 emulated), and
pairlie sees such a CPU. OpenVINO has no such switch: compare against it on a real AVX2 CPU
(``scripts/benchmark.py``).

- ``fp32``: the row stream (``streaming.stream``, the exact path before issue 30), bands with the
  ReLU separate and bands with the ReLU fused into oneDNN's convolution, and whatever the
  ``Enhancer`` picks, at 600x400 and 1920x1080; each output against the plain network's, bit for bit.
- ``int8``: N's and L's ReLU layers in oneDNN's int8 convolutions (the scheme that ships on VNNI
  CPUs), the rest fp32, with 7-bit activations (0..127: without VNNI oneDNN sums u8 x s8 pairs in
  int16, which 8-bit activations can overflow), and per-part variants; quality on all of LOL-test
  (gamma 0.14) and every 10th SICE-test image (gamma 0.2) against fp32, calibrated on 12 training
  images as ``tests/test_precision.py`` does; speed at 600x400 against the fp32 paths.
- ``winograd``: one 64->64 layer of the band the row stream computes, NNPACK's Winograd against
  oneDNN's direct convolution (channels-last), and ncnn's Winograd where ``ncnn`` is installed
  (it picks its kernels by CPUID: AVX-512 ones on an AVX-512 CPU, whatever ``--isa`` says).

Timings alternate the variants round by round; each figure is a median after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PAIRLIE_CPU_FLAGS": "avx avx2 fma"}
SIZES = {"600x400": (400, 600), "1920x1080": (1080, 1920)}
GAMMAS = {"LOL-test": (0.14, 1), "SICE-test": (0.2, 10)}  # gamma, every n-th image
# int8 schemes: the parts whose ReLU layers run in int8, and whether their first (3->64) layer does too
SCHEMES = {
    "NL": (("denoiser", "illumination"), True),  # the VNNI scheme
    "NL_hidden": (("denoiser", "illumination"), False),
    "N": (("denoiser",), True),
    "L": (("illumination",), True),
    "NLR": (("denoiser", "illumination", "reflectance"), True),
    "NLR_hidden": (("denoiser", "illumination", "reflectance"), False),
}


def timed(variants: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Median seconds of each variant, taking turns round by round after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def ratios(times: dict[str, float], base: str) -> dict[str, float]:
    return {name: round(times[base] / t, 3) for name, t in times.items()}


def fp32_study(net, rounds: int, band_powers: list[int], sizes: list[str]) -> dict:
    import torch

    from pairlie.infer import precision, streaming
    from pairlie.infer.enhancer import Enhancer

    cpu = torch.device("cpu")
    chosen = precision.fp32_bands

    defaults = streaming.BF16_BAND_PIXELS, streaming.BF16_BAND_ROWS

    def bands(fused: bool, pixels: int | None = None):
        def run(image):
            precision.fp32_bands = lambda: fused
            if pixels:  # bands of about this many pixels, at least 64 rows
                streaming.BF16_BAND_PIXELS, streaming.BF16_BAND_ROWS = pixels, 64
            try:
                return streaming.banded(net, image, cpu, torch.float32, 10)
            finally:
                precision.fp32_bands = chosen
                streaming.BF16_BAND_PIXELS, streaming.BF16_BAND_ROWS = defaults

        return run

    direct = Enhancer(net, device="cpu", gamma=0.2, conv="direct")
    default = Enhancer(net, device="cpu", gamma=0.2)  # conv=auto: Winograd where one layer measured >= 1.25x
    paths = {
        "row stream": lambda image: streaming.stream(net, image, cpu, torch.float32, 10),
        "bands": bands(False),
        "bands, ReLU fused": bands(True),
        **{f"bands, ReLU fused, 2^{p} px": bands(True, 1 << p) for p in band_powers},
        "Enhancer(conv='direct')": lambda image: direct._decomposed(image),
        "Enhancer() default": lambda image: default._decomposed(image),
    }
    result: dict = {"enhancer_direct": repr(direct), "enhancer_default": repr(default)}
    for size in sizes:
        height, width = SIZES[size]
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 0.4
        with torch.no_grad():
            plain = net(image.contiguous(memory_format=torch.channels_last))
        outputs = {name: run(image) for name, run in paths.items()}
        times = timed({name: (lambda run=run, image=image: run(image)) for name, run in paths.items()}, rounds)
        result[size] = {
            "seconds": {name: round(t, 4) for name, t in times.items()},
            "vs_row_stream": ratios(times, "row stream"),
            "bit_identical_to_plain_net": {
                name: all(torch.equal(a, b) for a, b in zip(out, plain, strict=True)) for name, out in outputs.items()
            },
            "max_difference_from_plain_net": {
                name: max(float((a - b).abs().max()) for a, b in zip(out, plain, strict=True))
                for name, out in outputs.items()
            },
        }
    return result


class Int8Scheme:
    """The ReLU layers of the parts named, in int8 with activations of ``levels`` steps; the rest fp32.

    Built as :class:`pairlie.infer.int8.Int8Net` is (histogram calibration, per-channel symmetric
    weights, the image at a fixed scale), with two changes for CPUs without VNNI: activations
    0..levels (each int8 layer clamps its uint8 output there), and the last int8 layer of a part
    writes fp32 (bf16 is emulated there). ``first=False``: each part's 3->64 layer runs in fp32 on the
    exact image and its output is quantised for the next.
    """

    def __init__(self, net, images, parts: tuple[str, ...], first: bool, levels: int = 127) -> None:
        import torch
        from torch.ao.quantization import HistogramObserver

        self.levels, self.first = levels, first
        convs = {name: getattr(net, name).convs()[:-1] for name in parts}
        observers = {
            name: [HistogramObserver(dtype=torch.quint8, reduce_range=levels == 127) for _ in c]
            for name, c in convs.items()
        }
        hooks = [
            conv.register_forward_pre_hook(lambda module, args, observer=observer: observer(args[0].detach()))
            for name in parts
            for conv, observer in zip(convs[name][1:], observers[name][1:], strict=True)
        ]
        try:
            with torch.no_grad():
                for image in images:
                    denoised = net.denoiser(image[None])
                    net.illumination(denoised)
                    net.reflectance(denoised)
        finally:
            for hook in hooks:
                hook.remove()
        self.layers: dict[str, list] = {}
        self.scales: dict[str, float] = {}
        for name in parts:
            scales = [1 / levels] + [float(o.calculate_qparams()[0]) for o in observers[name][1:]]
            outs = [*scales[1:], None]
            layers = [Int8Layer(conv, s, o, levels) for conv, s, o in zip(convs[name], scales, outs, strict=True)]
            if not first:
                layers[0] = Fp32ThenQuantize(convs[name][0], scales[1], levels)
            self.layers[name] = layers
            self.scales[name] = scales[0]

    def quantize_input(self, name: str, x):
        import torch

        if not self.first:
            return x.float()
        x = x.float().contiguous(memory_format=torch.channels_last)
        return torch.ops.quantized_decomposed.quantize_per_tensor(x, self.scales[name], 0, 0, self.levels, torch.uint8)


class Int8Layer:
    """One 3x3 convolution and its ReLU in int8, writing uint8 clamped to 0..levels (fp32 where ``out_scale`` is None)."""

    def __init__(self, conv, scale: float, out_scale: float | None, levels: int) -> None:
        import torch

        from pairlie.infer.int8 import Int8Conv

        self.inner = Int8Conv(conv, scale, out_scale)
        self.levels = levels
        self.out_dtype = torch.float32 if out_scale is None else None

    def __call__(self, x, padding):
        import torch

        inner = self.inner
        last = self.out_dtype is not None
        attr, scalars = ("relu", []) if last else ("hardtanh", [0.0, self.levels * inner.out_scale])
        return torch.ops.onednn.qconv2d_pointwise(
            x.contiguous(memory_format=torch.channels_last), inner.scale, 0, inner.packed,
            inner.weight_scale, inner.weight_zero, inner.bias, [1, 1], list(padding), [1, 1], 1,
            1.0 if last else inner.out_scale, 0, self.out_dtype, attr, scalars, "",
        )  # fmt: skip


class Fp32ThenQuantize:
    """A part's first layer in fp32 with its ReLU, its output quantised to 0..levels for the int8 layer after it."""

    def __init__(self, conv, out_scale: float, levels: int) -> None:
        self.conv, self.out_scale, self.levels = conv, out_scale, levels

    def __call__(self, x, padding):
        import torch

        from pairlie.infer.precision import conv2d_relu

        y = conv2d_relu(x.contiguous(memory_format=torch.channels_last), self.conv.weight, self.conv.bias, padding)
        return torch.ops.quantized_decomposed.quantize_per_tensor(y, self.out_scale, 0, 0, self.levels, torch.uint8)


def int8_study(net, data: Path, rounds: int, schemes: list[str], sets: list[str]) -> dict:
    import torch

    from pairlie.evaluate.metrics import paper_scores
    from pairlie.infer import streaming
    from pairlie.infer.int8 import _crop  # the shipped scheme's calibration crops
    from pairlie.io.images import read_rgb, to_tensor, to_uint8
    from pairlie.model.nets import enhance

    cpu = torch.device("cpu")
    train = sorted((data / "LOL-train-subset").rglob("*.png"))[::2][:6]
    train += sorted((data / "SICE-train").rglob("*.JPG"))[::60][:6]
    calibration = [_crop(to_tensor(read_rgb(p)[0])) for p in train]
    built = {name: Int8Scheme(net, calibration, *SCHEMES[name]) for name in schemes}
    built["NL, 8-bit"] = Int8Scheme(net, calibration, *SCHEMES["NL"], levels=255)

    def run(scheme):
        def forward(image):
            if scheme is None:
                return streaming.stream(net, image, cpu, torch.float32, 10)
            return streaming.banded(net, image, cpu, torch.float32, 10, int8=scheme)

        return forward

    def bands(image):  # what fp32 runs on an AVX2 CPU: bands, the ReLUs fused
        return streaming.banded(net, image, cpu, torch.float32, 10)

    runs = {"fp32 row stream": run(None), **{name: run(s) for name, s in built.items()}}
    result: dict = {}
    for folder in sets:
        gamma, every = GAMMAS[folder]
        lows = sorted((data / folder / "low").iterdir())[::every]
        scores: dict[str, list] = {name: [] for name in runs}
        for low in lows:
            image = to_tensor(read_rgb(low)[0])[None]
            reference = to_uint8(read_rgb(data / folder / "high" / low.name)[0])
            for name, forward in runs.items():
                illumination, reflectance, _ = forward(image)
                scores[name].append(paper_scores(enhance(illumination, reflectance, gamma)[0], reference))
        means = {
            name: (statistics.mean(s[0] for s in v), statistics.mean(s[1] for s in v)) for name, v in scores.items()
        }
        base = means["fp32 row stream"]
        result[folder] = {
            "count": len(lows),
            "gamma": gamma,
            **{
                name: {
                    "psnr": round(p, 4),
                    "ssim": round(s, 5),
                    "psnr_diff": round(p - base[0], 4),
                    "ssim_diff": round(s - base[1], 5),
                }
                for name, (p, s) in means.items()
            },
        }
    image = torch.rand(1, 3, 400, 600, generator=torch.Generator().manual_seed(0)) * 0.4
    runs["fp32 bands, ReLU fused"] = bands
    times = timed({name: (lambda forward=forward: forward(image)) for name, forward in runs.items()}, rounds)
    result["600x400"] = {
        "seconds": {n: round(t, 4) for n, t in times.items()},
        "vs_fp32_row_stream": ratios(times, "fp32 row stream"),
    }
    return result


def winograd_study(rounds: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from pairlie.infer import winograd

    if reason := winograd.unavailable_reason():
        return {"skipped": reason}
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, 109, 600, generator=generator)
    weight, bias = torch.randn(64, 64, 3, 3, generator=generator) * 0.05, torch.randn(64, generator=generator)
    x_last = x.contiguous(memory_format=torch.channels_last)
    weight_last = weight.contiguous(memory_format=torch.channels_last)
    runs = {
        "oneDNN direct, channels-last": lambda: F.conv2d(x_last, weight_last, bias, padding=1),
        "oneDNN direct, NCHW": lambda: F.conv2d(x, weight, bias, padding=1),
        "NNPACK Winograd, NCHW": lambda: winograd.conv2d(x, weight, bias, (1, 1)),
    }
    result: dict = {"layer": "64->64, 3x3, padding 1, a 109x600 band (the row stream's)"}
    try:
        runs.update(ncnn_layers(x.numpy()[0], weight.numpy(), bias.numpy()))
    except ImportError:
        result["ncnn"] = "not installed (pip install ncnn): its Winograd F(6,3)/F(4,3)/F(2,3) not measured"
    want = F.conv2d(x, weight, bias, padding=1)
    with winograd.sharing_cores():
        result["max_difference_from_direct"] = {
            name: float((torch.as_tensor(np.asarray(run())).reshape(want.shape) - want).abs().max())
            for name, run in runs.items()
        }
        times = timed(runs, rounds)
    flop = 2 * 64 * 64 * 9 * 109 * 600
    result.update(
        seconds={n: round(t, 5) for n, t in times.items()},
        gflop_per_s_direct_equivalent={n: round(flop / t / 1e9, 1) for n, t in times.items()},
        vs_direct_channels_last=ratios(times, "oneDNN direct, channels-last"),
    )
    return result


def ncnn_layers(x, weight, bias) -> dict[str, Callable]:
    """The layer in ncnn (Tencent's maintained inference library; x86 Winograd kernels), with and without Winograd.

    ncnn picks its kernels by CPUID: on a CPU with AVX-512 it runs them whatever ``--isa`` says.
    """
    import tempfile

    import ncnn
    import numpy as np

    folder = Path(tempfile.mkdtemp())
    out, channels = weight.shape[:2]
    (folder / "layer.param").write_text(
        f"7767517\n2 2\nInput data 0 1 data\nConvolution conv 1 1 data out 0={out} 1=3 4=1 5=1 6={weight.size}\n"
    )
    # a weight blob starts with a 4-byte tag, 0 for raw fp32; the bias follows untagged
    (folder / "layer.bin").write_bytes(np.uint32(0).tobytes() + weight.tobytes() + bias.tobytes())
    image = ncnn.Mat(np.ascontiguousarray(x))
    runs = {}
    for name, winograd in (("ncnn Winograd", True), ("ncnn without Winograd", False)):
        net = ncnn.Net()
        net.opt.num_threads = __import__("torch").get_num_threads()
        net.opt.use_winograd_convolution = winograd
        net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_bf16_storage = False
        net.load_param(str(folder / "layer.param"))
        net.load_model(str(folder / "layer.bin"))

        def run(net=net):
            extractor = net.create_extractor()
            extractor.input("data", image)
            return np.array(extractor.extract("out")[1])

        runs[name] = run
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", choices=("avx2", "native"), default="avx2")
    parser.add_argument("--parts", default="fp32,int8,winograd")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--sets", default=",".join(GAMMAS), help="int8 quality on these; empty: speed only")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", default=",".join(SIZES), help="fp32 timings: " + ", ".join(SIZES))
    parser.add_argument("--band-powers", default="", help="fp32 bands of 2^p pixels to time as well, e.g. 16,17,18")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})  # before torch loads
    import torch

    from pairlie.infer.precision import cpu_description
    from pairlie.model.checkpoints import load_net

    data = Path(args.data)
    weights = data.parent / "weights" / "PairLIE.pth"
    if not weights.is_file() or not (data / "LOL-test").is_dir():
        raise SystemExit(f"error: --data={data}: needs LOL-test/ there and ../weights/PairLIE.pth beside it")
    if unknown := set(args.schemes.split(",")) - set(SCHEMES):
        raise SystemExit(f"error: --schemes: unknown {sorted(unknown)}; choose from {', '.join(SCHEMES)}")
    net = load_net(weights)[0].eval().to(memory_format=torch.channels_last).requires_grad_(False)
    result: dict = {
        "cpu": cpu_description(),
        "forced": {k: os.environ.get(k) for k in AVX2_ENV},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    parts = args.parts.split(",")
    if "fp32" in parts:
        powers = [int(p) for p in args.band_powers.split(",") if p]
        result["fp32"] = fp32_study(net, args.rounds, powers, args.sizes.split(","))
    if "int8" in parts:
        sets = [name for name in args.sets.split(",") if name]
        result["int8"] = int8_study(net, data, args.rounds, args.schemes.split(","), sets)
    if "winograd" in parts:
        result["winograd"] = winograd_study(args.rounds)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
