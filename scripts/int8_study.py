#!/usr/bin/env python
"""Static int8 quantisation of the official net on the CPU: quality and speed of each scheme against fp32; prints one JSON object.

    python scripts/int8_study.py [--schemes all,first_last_fp32,...] [--sets LOL-test,SICE-test] [--data ../shared/data]

Which layers ``precision=int8`` may run in int8 (issue 22): it must stay within 0.05 dB PSNR and
0.003 SSIM of fp32 on LOL-test and SICE-test (``NL_hidden`` does; pairlie.infer.int8 runs it with
oneDNN's int8 convolutions inside pairlie's bands). Each scheme is torch's x86 static
quantisation (FX graph mode: int8 per-channel symmetric weights, uint8 per-tensor activations with
a histogram observer, oneDNN/FBGEMM int8 kernels), calibrated on 12 training images (6
LOL-train-subset, 6 SICE-train, 256x256 crops, never test images), with the layers the scheme
names kept in fp32. ``--activations full`` (the default) uses all 8 bits of the activations, which
CPUs with VNNI or AMX compute without overflow; ``reduced`` is ``get_default_qconfig_mapping("x86")``
as it stands (7 bits, for CPUs without them). Quality: the paper's PSNR/SSIM on all of LOL-test
(γ 0.14) and every 10th SICE-test image (γ 0.2). Speed: whole 600x400 images, the plain fp32 net
against the quantised one, alternating, medians.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from pairlie.evaluate.metrics import paper_scores
from pairlie.infer.precision import cpu_description
from pairlie.io.images import read_rgb, to_tensor, to_uint8
from pairlie.model.checkpoints import load_net
from pairlie.model.nets import enhance

PARTS = ("denoiser", "illumination", "reflectance")
FIRST = [f"{part}.layers.1" for part in PARTS]  # [pad, conv, act] blocks: convs at 1, 4, 7, 10, 13
LAST = [f"{part}.layers.{i}" for part in PARTS for i in (12, 13, 14)]  # the last pad, conv and sigmoid
ALL_OF = {part: [f"{part}.layers.{i}" for i in range(15)] for part in PARTS}
# scheme -> the modules kept in fp32
SCHEMES = {
    "all": [],
    "last_fp32": LAST,
    "first_last_fp32": FIRST + LAST,
    "N_fp32_LR_hidden": ALL_OF["denoiser"] + FIRST + LAST,
    "L_only": ALL_OF["denoiser"] + ALL_OF["reflectance"] + LAST,
    # the hidden 64->64 layers of one or two parts in int8, the first and last layers fp32
    "N_hidden": ALL_OF["illumination"] + ALL_OF["reflectance"] + FIRST + LAST,
    "L_hidden": ALL_OF["denoiser"] + ALL_OF["reflectance"] + FIRST + LAST,
    "R_hidden": ALL_OF["denoiser"] + ALL_OF["illumination"] + FIRST + LAST,
    "NL_hidden": ALL_OF["reflectance"] + FIRST + LAST,
}
GAMMAS = {"LOL-test": 0.14, "SICE-test": 0.2}


def quantised(
    net: torch.nn.Module, keep: list[str], calibration: list[torch.Tensor], activations: str = "full"
) -> torch.nn.Module:
    from torch.ao.quantization import HistogramObserver, QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    mapping = get_default_qconfig_mapping("x86")
    if activations == "full":  # the x86 default's weights, activations over all of uint8
        default = mapping.global_qconfig
        mapping = mapping.set_global(QConfig(HistogramObserver.with_args(reduce_range=False), default.weight))
    for name in keep:
        mapping = mapping.set_module_name(name, None)
    prepared = prepare_fx(copy.deepcopy(net), mapping, (calibration[0],))
    with torch.no_grad():
        for image in calibration:
            prepared(image[..., :256, :256])
    return convert_fx(prepared)


def scores(model, data: Path, folder: str) -> tuple[float, float, int]:
    lows = sorted((data / folder / "low").iterdir())[:: 1 if folder == "LOL-test" else 10]
    results = []
    for low in lows:
        with torch.no_grad():
            illumination, reflectance, _ = model(to_tensor(read_rgb(low)[0])[None])
        enhanced = enhance(illumination.float(), reflectance.float(), GAMMAS[folder])[0]
        results.append(paper_scores(enhanced, to_uint8(read_rgb(data / folder / "high" / low.name)[0])))
    return statistics.mean(r[0] for r in results), statistics.mean(r[1] for r in results), len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--sets", default="LOL-test,SICE-test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--activations", choices=("full", "reduced"), default="full")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    data = Path(args.data)
    schemes = args.schemes.split(",")
    if unknown := set(schemes) - set(SCHEMES):
        raise SystemExit(f"error: --schemes: unknown {sorted(unknown)}; choose from {', '.join(SCHEMES)}")
    weights = data.parent / "weights" / "PairLIE.pth"
    if not weights.is_file() or not (data / "LOL-test").is_dir():
        raise SystemExit(f"error: --data={data}: needs LOL-test/ there and ../weights/PairLIE.pth beside it")
    warnings.filterwarnings("ignore")  # torch.ao's FX quantisation warns that it moves to torchao
    torch.backends.quantized.engine = "x86"
    net = load_net(weights)[0].eval()
    train = sorted((data / "LOL-train-subset").rglob("*.png"))[::2][:6]
    train += sorted((data / "SICE-train").rglob("*.JPG"))[::60][:6]
    calibration = [to_tensor(read_rgb(p)[0])[None] for p in train]
    models = {"fp32": net, **{s: quantised(net, SCHEMES[s], calibration, args.activations) for s in schemes}}
    result: dict = {"cpu": cpu_description(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    result["activations"] = args.activations
    for folder in args.sets.split(","):
        section = {
            name: dict(zip(("psnr", "ssim", "count"), scores(m, data, folder), strict=True))
            for name, m in models.items()
        }
        for name in schemes:
            section[name]["psnr_diff"] = section[name]["psnr"] - section["fp32"]["psnr"]
            section[name]["ssim_diff"] = section[name]["ssim"] - section["fp32"]["ssim"]
        result[folder] = section
    image = torch.rand(1, 3, 400, 600)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(image)
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(image)
                times[name].append(time.perf_counter() - start)
    result["whole_600x400_s"] = {name: statistics.median(t) for name, t in times.items()}
    result["speedup_over_fp32"] = {
        name: statistics.median(times["fp32"]) / statistics.median(times[name]) for name in schemes
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
