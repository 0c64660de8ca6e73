#!/usr/bin/env python
"""Benchmark pairlie against the published PairLIE loop, in one run on one machine; prints one JSON object.

    python scripts/benchmark.py [--quick] [--device cpu|cuda] [--data ../shared/data]

The reference is the published loop written plainly: both exposures through all three nets (the
unused illumination of the second included), eager fp32, batch 1, two full images decoded from disk
for every step, no DataLoader workers; inference on whole images. pairlie's side is its own
training step (cached decoded scenes, no second illumination) and its Enhancer (tiles,
channels-last). Every timing is a median over repeats after a warm-up; GPU timings synchronise.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pairlie.checkpoints import load_net
from pairlie.data.datasets import ExposurePairDataset
from pairlie.data.scenes import discover_scenes
from pairlie.images import load_image, quantize
from pairlie.inference import Enhancer
from pairlie.losses import LossWeights, consistency_loss, fidelity_loss, pairlie_losses, retinex_loss
from pairlie.nets import PairLIENet, enhance

REPO = Path(__file__).resolve().parents[1]
# multiply-adds per output pixel: N and R 3->64->64->64->64->3, L ...->1
MACS = {"N": 9 * (3 * 64 + 3 * 64 * 64 + 64 * 3), "R": 9 * (3 * 64 + 3 * 64 * 64 + 64 * 3)}
MACS["L"] = 9 * (3 * 64 + 3 * 64 * 64 + 64 * 1)
FORWARD_FLOP_PER_PX = 2 * (MACS["N"] + MACS["L"] + MACS["R"])
# useful training work per pixel of a pair: forward + 2x backward of N, L, R on im1 and N, R on im2
TRAIN_FLOP_PER_PX = 3 * 2 * (MACS["N"] + MACS["L"] + MACS["R"] + MACS["N"] + MACS["R"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_pair(scene_paths, patch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The published data path: decode two full images from disk, crop the same window."""
    first, second = rng.choice(len(scene_paths), 2, replace=False)
    im1 = torch.from_numpy(np.array(Image.open(scene_paths[first]).convert("RGB"))).permute(2, 0, 1).float() / 255
    im2 = torch.from_numpy(np.array(Image.open(scene_paths[second]).convert("RGB"))).permute(2, 0, 1).float() / 255
    top = rng.integers(0, im1.shape[1] - patch + 1)
    left = rng.integers(0, im1.shape[2] - patch + 1)
    return (im1[:, top : top + patch, left : left + patch][None], im2[:, top : top + patch, left : left + patch][None])


def reference_loss(net, im1, im2):
    L1, R1, X1 = net(im1)
    L2, R2, X2 = net(im2)  # the published loop computes L2 although no loss uses it
    return consistency_loss(R1, R2) + retinex_loss(L1, R1, im1, X1) + 500 * fidelity_loss(im1, X1)


def bench_training(scenes, device, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    base = PairLIENet(64)
    rng = np.random.default_rng(0)
    out = {}

    ref_net = PairLIENet(64).to(device)
    ref_net.load_state_dict(base.state_dict())
    ref_opt = torch.optim.Adam(ref_net.parameters(), lr=1e-4)

    def ref_step():
        im1, im2 = reference_pair(scenes[rng.integers(len(scenes))].paths, 128, rng)
        loss = reference_loss(ref_net, im1.to(device), im2.to(device))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()

    dataset = ExposurePairDataset(scenes, patch_size=128)
    net = PairLIENet(64).to(device)
    net.load_state_dict(base.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    weights = LossWeights()

    def pairlie_step(b=1):
        items = [dataset[int(i)] for i in rng.integers(0, len(dataset), b)]
        im1 = torch.stack([a for a, _ in items]).to(device, non_blocking=True)
        im2 = torch.stack([c for _, c in items]).to(device, non_blocking=True)
        L1, R1, X1 = net(im1)
        loss = pairlie_losses(L1, R1, X1, net.reflectance_only(im2), im1, weights)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_ref = timed(ref_step, device, steps, warmup=2)
    t_ours = timed(pairlie_step, device, steps, warmup=2)
    t_batch = timed(lambda: pairlie_step(batch), device, max(2, steps // 2), warmup=1)
    flop = TRAIN_FLOP_PER_PX * 128 * 128
    out["train_b1"] = {
        "reference_pair_steps_per_s": 1 / t_ref,
        "pairlie_pair_steps_per_s": 1 / t_ours,
        "ratio": t_ref / t_ours,
        "reference_gflops": flop / t_ref / 1e9,
        "pairlie_gflops": flop / t_ours / 1e9,
    }
    out[f"train_b{batch}"] = {
        "pairlie_pair_steps_per_s": batch / t_batch,
        "pairlie_gflops": batch * flop / t_batch / 1e9,
    }

    # The same loss for the same weights and inputs: the optimisation is unchanged.
    torch.manual_seed(1)
    check = PairLIENet(64).to(device)
    im1, im2 = torch.rand(1, 3, 128, 128, device=device), torch.rand(1, 3, 128, 128, device=device)
    with torch.no_grad():
        a = reference_loss(check, im1, im2).item()
        L1, R1, X1 = check(im1)
        b = pairlie_losses(L1, R1, X1, check.reflectance_only(im2), im1, weights)["total"].item()
    out["train_b1"]["loss_rel_diff"] = abs(a - b) / abs(a)

    # Data: published decode-per-step vs pairlie's cached scenes.
    t_ref_data = timed(lambda: reference_pair(scenes[rng.integers(len(scenes))].paths, 128, rng), device, steps * 3)
    t_data = timed(lambda: dataset[int(rng.integers(len(dataset)))], device, steps * 3)
    out["data"] = {
        "reference_samples_per_s": 1 / t_ref_data,
        "pairlie_samples_per_s": 1 / t_data,
        "ratio": t_ref_data / t_data,
        "pairlie_data_share_of_step": t_data / (t_ours + t_data),
    }
    return out


def bench_inference(weights: Path | None, image: torch.Tensor, device, repeats: int, reference: bool) -> dict:
    net = load_net(weights)[0] if weights else PairLIENet(64)
    ref_net = PairLIENet(64).to(device).eval()
    ref_net.load_state_dict(net.state_dict())
    enhancer = Enhancer(net, gamma=0.2, device=str(device))
    x = image[None].to(device)
    out = {"size": f"{image.shape[2]}x{image.shape[1]}"}
    flop = FORWARD_FLOP_PER_PX * image.shape[1] * image.shape[2]

    @torch.no_grad()
    def ref():
        L, R, _ = ref_net(x)
        return enhance(L, R, 0.2)

    t_ours = timed(lambda: enhancer.decompose(image), device, repeats)
    out.update({"pairlie_s": t_ours, "pairlie_gflops": flop / t_ours / 1e9})
    if reference:
        t_ref = timed(ref, device, repeats)
        diff = np.abs(
            quantize(ref()[0].cpu()).astype(int) - quantize(enhancer.decompose(image).enhanced[0]).astype(int)
        )
        out.update(
            {
                "reference_s": t_ref,
                "reference_gflops": flop / t_ref / 1e9,
                "ratio": t_ref / t_ours,
                "max_grey_level_diff": int(diff.max()),
            }
        )
    return out


def conv_peak(device, repeats: int) -> float:
    """GFLOP/s of one 64->64 3x3 convolution on a cache-sized channels-last tile: this machine's practical peak."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.rand(1, 64, 128, 128, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        t = timed(lambda: conv(x), device, repeats * 5, warmup=3)
    return 2 * 64 * 64 * 9 * 128 * 128 / t / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, no 1080p reference (< 2 min on 2 CPU cores)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--batch", type=int, default=8, help="the larger training batch")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "SICE-train").is_dir():
        sys.exit(
            f"error: --data={data}: no SICE-train/ there; point --data at the folder holding SICE-train and LOL-test"
        )
    device = torch.device(args.device)
    weights = data.parent / "weights" / "PairLIE.pth"
    repeats = 3 if args.quick else 7
    steps = 8 if args.quick else 30
    scenes = discover_scenes(data / "SICE-train", 128)[: 12 if args.quick else None]
    lol = sorted((data / "LOL-test" / "low").glob("*.png"))
    result = {
        "machine": {
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "quick": args.quick,
        },
        "conv_peak_gflops": conv_peak(device, repeats),
    }
    result.update(bench_training(scenes, device, steps, args.batch))
    image = load_image(lol[0])
    result["infer_600x400"] = bench_inference(weights if weights.is_file() else None, image, device, repeats, True)
    hd = torch.nn.functional.interpolate(image[None], size=(1080, 1920), mode="bilinear", align_corners=False)[0]
    result["infer_1920x1080"] = bench_inference(
        weights if weights.is_file() else None, hd, device, 1 if args.quick else 3, reference=not args.quick
    )
    enhancer = Enhancer.from_checkpoint(weights, device=str(device)) if weights.is_file() else Enhancer(PairLIENet(64))
    folder = lol[: 5 if args.quick else len(lol)]
    start = time.perf_counter()
    for path in folder:
        quantize(enhancer.decompose(load_image(path)).enhanced[0])
    sync(device)
    result["folder_images_per_s"] = len(folder) / (time.perf_counter() - start)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
