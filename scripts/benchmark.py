#!/usr/bin/env python
"""Benchmark pairlie against the published PairLIE loop, in one run on one machine; prints one JSON object.

    python scripts/benchmark.py [--quick] [--device cpu|cuda] [--data ../shared/data]

Each side runs in its own worker process, set up the way it runs for users: the reference is the
published loop written plainly (both exposures through all three nets, the unused illumination of
the second included; eager fp32; two full images decoded from disk for every sample; no DataLoader
workers; whole-image inference; the default allocator). pairlie is its own training step (decoded
scenes cached, no second illumination) and its Enhancer (equal tiles with exactly the receptive
radius of context, channels-last, zero-padded convolutions with reflected border rings), in a
process with ``pairlie.speed.keep_freed_memory()`` as its CLIs set it. The parent alternates the
workers round by round, so slow phases of a noisy machine hit both sides alike; every figure is a
median over rounds after a warm-up, GPU timings synchronise. A third worker (full mode) runs
pairlie's code with the default allocator, to say what each change contributes. Page faults per
step or image and the kernel's share of each side's CPU time are reported with the timings: on a
VM the cost of a page fault varies over the day, and with it the published code's speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pairlie.nets import PairLIENet

REPO = Path(__file__).resolve().parents[1]
# per pixel, as torch's FLOP counter counts them (tested): N, L, R forward; the useful training
# work of a pair (N, L, R on im1 and N, R on im2, forward and backward), which both sides are
# credited with although the reference also computes the unused illumination of im2
FORWARD_FLOP_PER_PX = PairLIENet(64).forward_flops(1)
TRAIN_FLOP_PER_PX = PairLIENet(64).training_flops(1)
PATCH = 128


# ----------------------------------------------------------------------------- worker side


class Side:
    """One side of the comparison, living in its own process."""

    def __init__(self, kind: str, device: str, data: Path, scene_limit: int | None) -> None:
        from pairlie.data.scenes import discover_scenes
        from pairlie.losses import LossWeights
        from pairlie.nets import PairLIENet

        self.kind, self.device, self.data_dir = kind, torch.device(device), data
        if kind == "pairlie":
            from pairlie.speed import keep_freed_memory

            keep_freed_memory()
        self.scenes = discover_scenes(data / "SICE-train", PATCH)[:scene_limit]
        self.rng = np.random.default_rng(0)
        self.weights = LossWeights()
        weights = data.parent / "weights" / "PairLIE.pth"
        torch.manual_seed(0)
        self.train_net = PairLIENet(64).to(self.device)
        self.opt = torch.optim.Adam(self.train_net.parameters(), lr=1e-4)
        if weights.is_file():
            from pairlie.checkpoints import load_net

            self.infer_net = load_net(weights)[0].eval()
        else:
            self.infer_net = PairLIENet(64).eval()
        if kind == "reference":
            self.infer_net.to(self.device)
        else:
            from pairlie.data.datasets import ExposurePairDataset
            from pairlie.inference import Enhancer

            self.dataset = ExposurePairDataset(self.scenes, patch_size=PATCH)
            self.enhancer = Enhancer(self.infer_net, gamma=0.2, device=str(self.device))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn, count: int) -> list[float]:
        times = []
        for _ in range(count):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return times

    # the published data path: decode two full exposures from disk, crop one window
    def reference_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        paths = self.scenes[self.rng.integers(len(self.scenes))].paths
        first, second = self.rng.choice(len(paths), 2, replace=False)
        ims = [
            torch.from_numpy(np.array(Image.open(paths[i]).convert("RGB"))).permute(2, 0, 1).float() / 255
            for i in (first, second)
        ]
        top = self.rng.integers(0, ims[0].shape[1] - PATCH + 1)
        left = self.rng.integers(0, ims[0].shape[2] - PATCH + 1)
        return tuple(im[:, top : top + PATCH, left : left + PATCH] for im in ims)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "reference":
            return self.reference_sample()
        return self.dataset[int(self.rng.integers(len(self.dataset)))]

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.sample() for _ in range(size)]
        return tuple(torch.stack(ims).to(self.device, non_blocking=True) for ims in zip(*items, strict=True))

    def loss(self, net, im1: torch.Tensor, im2: torch.Tensor) -> torch.Tensor:
        from pairlie.losses import consistency_loss, fidelity_loss, pairlie_losses, retinex_loss

        if self.kind == "reference":
            L1, R1, X1 = net(im1)
            L2, R2, X2 = net(im2)  # the published loop computes L2 although no loss uses it
            return consistency_loss(R1, R2) + retinex_loss(L1, R1, im1, X1) + 500 * fidelity_loss(im1, X1)
        L1, R1, X1 = net(im1)
        return pairlie_losses(L1, R1, X1, net.reflectance_only(im2), im1, self.weights)["total"]

    def train(self, steps: int, batch: int) -> list[float]:
        def step():
            im1, im2 = self.batch(batch)
            loss = self.loss(self.train_net, im1, im2)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

        return self.timed(step, steps)

    def same_loss(self) -> float:
        """The loss of fixed weights on fixed inputs: both sides must agree."""
        from pairlie.nets import PairLIENet

        torch.manual_seed(1)
        net = PairLIENet(64).to(self.device)
        im1, im2 = torch.rand(2, 1, 3, PATCH, PATCH, device=self.device)
        with torch.no_grad():
            return self.loss(net, im1, im2).item()

    def data(self, count: int) -> list[float]:
        return self.timed(self.sample, count)

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        from pairlie.nets import enhance

        if self.kind == "reference":
            with torch.no_grad():
                L, R, _ = self.infer_net(image[None].to(self.device))
                return enhance(L, R, 0.2)[0].cpu()
        return self.enhancer.decompose(image).enhanced[0]

    def infer(self, height: int, width: int, count: int, keep: bool) -> dict:
        from pairlie.images import load_image, quantize

        image = load_image(sorted((self.data_dir / "LOL-test" / "low").glob("*.png"))[0])
        if image.shape[1:] != (height, width):
            image = torch.nn.functional.interpolate(image[None], (height, width), mode="bilinear")[0].clamp(0, 1)
        before = self.usage()
        out = {"times": self.timed(lambda: self.enhance(image), count)}
        out["usage"] = [b - a for a, b in zip(before, self.usage(), strict=True)]
        if keep:
            out["image"] = quantize(self.enhance(image))
        return out

    def folder(self, count: int) -> float:
        """Images/s: decode, enhance, write a PNG, for the first ``count`` LOL-test photos."""
        from PIL import Image

        from pairlie.images import load_image, quantize

        paths = sorted((self.data_dir / "LOL-test" / "low").glob("*.png"))[:count]
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            for path in paths:
                Image.fromarray(quantize(self.enhance(load_image(path)))).save(Path(tmp) / path.name)
            return len(paths) / (time.perf_counter() - start)

    def conv_peak(self, repeats: int) -> float:
        """GFLOP/s of one 64->64 3x3 convolution on a cache-sized channels-last tile: the practical peak."""
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(self.device).to(memory_format=torch.channels_last)
        x = torch.rand(1, 64, 128, 128, device=self.device).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            self.timed(lambda: conv(x), 3)
            return 2 * 64 * 64 * 9 * 128 * 128 / statistics.median(self.timed(lambda: conv(x), repeats)) / 1e9

    def peak_rss_mb(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def usage(self) -> tuple[int, float, float]:
        """Page faults, system and user CPU seconds of this process so far (all threads)."""
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_minflt + r.ru_majflt, r.ru_stime, r.ru_utime


def serve(conn, kind: str, device: str, data: str, scene_limit: int | None) -> None:
    side = Side(kind, device, Path(data), scene_limit)
    conn.send("ready")
    while True:
        request = conn.recv()
        if request is None:
            return
        name, args = request
        conn.send(getattr(side, name)(*args))


# ----------------------------------------------------------------------------- parent side


class Worker:
    def __init__(self, kind: str, args) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        limit = 12 if args.quick else None
        self.process = ctx.Process(target=serve, args=(child, kind, args.device, args.data, limit), daemon=True)
        self.process.start()
        if self.conn.recv() != "ready":
            raise RuntimeError(f"{kind} worker failed to start")

    def __call__(self, name: str, *args):
        self.conn.send((name, args))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()


class Usage:
    """Page faults per training step and the kernel's share of CPU time, per worker, over a phase."""

    def __init__(self, workers: dict[str, Worker]) -> None:
        self.workers = workers
        self.start = {kind: worker("usage") for kind, worker in workers.items()}

    def figures(self, calls: dict[str, int]) -> dict:
        out = {}
        for kind, worker in self.workers.items():
            faults, system, user = (b - a for a, b in zip(self.start[kind], worker("usage"), strict=True))
            out[f"{kind}_page_faults_per_step"] = round(faults / calls[kind])
            out[f"{kind}_kernel_cpu_share"] = system / max(system + user, 1e-9)
        return out


def alternate(
    workers: dict[str, Worker], name: str, rounds: int, *args, warmup: bool = True
) -> tuple[dict[str, list[float]], Usage]:
    """Per-call times of ``name`` on every worker, the workers taking turns; a warm-up round first."""
    for worker in workers.values() if warmup else ():
        worker(name, *args)
    usage = Usage(workers)
    times: dict[str, list[float]] = {kind: [] for kind in workers}
    for _ in range(rounds):
        for kind, worker in workers.items():
            times[kind] += worker(name, *args)
    return times, usage


def med(times: list[float]) -> float:
    return statistics.median(times)


def train_figures(timed: tuple[dict[str, list[float]], Usage], batch: int) -> dict:
    times, usage = timed
    flop = TRAIN_FLOP_PER_PX * PATCH * PATCH * batch
    out = usage.figures({kind: len(t) for kind, t in times.items()})
    for kind, t in times.items():
        out[f"{kind}_pair_steps_per_s"] = batch / med(t)
        out[f"{kind}_gflops"] = flop / med(t) / 1e9
    out["ratio"] = med(times["reference"]) / med(times["pairlie"])
    if "pairlie_default_malloc" in times:
        out["ratio_without_malloc_setting"] = med(times["reference"]) / med(times["pairlie_default_malloc"])
    return out


def infer_figures(workers: dict[str, Worker], height: int, width: int, rounds: int, warmup: bool = True) -> dict:
    for worker in workers.values() if warmup else ():
        worker("infer", height, width, 1, False)
    times: dict[str, list[float]] = {kind: [] for kind in workers}
    images = {}
    usage = {kind: [0, 0.0, 0.0] for kind in workers}
    for i in range(rounds):
        for kind, worker in workers.items():
            result = worker("infer", height, width, 1, i == 0)
            times[kind] += result["times"]
            usage[kind] = [a + b for a, b in zip(usage[kind], result["usage"], strict=True)]
            images.setdefault(kind, result.get("image"))
    flop = FORWARD_FLOP_PER_PX * height * width
    out: dict = {"size": f"{width}x{height}"}
    for kind, (faults, system, user) in usage.items():
        out[f"{kind}_page_faults_per_image"] = round(faults / rounds)
        out[f"{kind}_kernel_cpu_share"] = system / max(system + user, 1e-9)
    for kind, t in times.items():
        out[f"{kind}_s"] = med(t)
        out[f"{kind}_gflops"] = flop / med(t) / 1e9
    if "reference" in times:
        out["ratio"] = med(times["reference"]) / med(times["pairlie"])
        if "pairlie_default_malloc" in times:
            out["ratio_without_malloc_setting"] = med(times["reference"]) / med(times["pairlie_default_malloc"])
        diff = np.abs(images["reference"].astype(int) - images["pairlie"].astype(int))
        out["max_grey_level_diff"] = int(diff.max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds, no 1080p reference (< 2 min on 2 CPU cores)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--batch", type=int, default=8, help="the larger training batch")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "SICE-train").is_dir() or not (data / "LOL-test" / "low").is_dir():
        sys.exit(
            f"error: --data={data}: no SICE-train/ and LOL-test/low/ there; point --data at the shared data folder"
        )
    quick = args.quick
    kinds = ["reference", "pairlie"] + ([] if quick else ["pairlie_default_malloc"])
    # "pairlie_default_malloc" runs pairlie's code without pairlie.speed.keep_freed_memory()
    workers = {kind: Worker(kind, args) for kind in kinds}
    both = {kind: workers[kind] for kind in ("reference", "pairlie")}
    ours = {"pairlie": workers["pairlie"]}
    rounds = 4 if quick else 10

    result: dict = {
        "machine": {
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "quick": quick,
        },
        "conv_peak_gflops": workers["pairlie"]("conv_peak", 15),
    }
    result["train_b1"] = train_figures(alternate(workers, "train", rounds, 2, 1), 1)
    losses = {kind: workers[kind]("same_loss") for kind in ("reference", "pairlie")}
    result["train_b1"]["loss_rel_diff"] = abs(losses["reference"] - losses["pairlie"]) / abs(losses["reference"])
    result[f"train_b{args.batch}"] = train_figures(
        alternate(workers, "train", 1 if quick else 3, 1, args.batch), args.batch
    )

    data_times = alternate(both, "data", rounds, 8)[0]
    step = med(alternate({"pairlie": workers["pairlie"]}, "train", 2, 2, 1)[0]["pairlie"])
    result["data"] = {
        "reference_samples_per_s": 1 / med(data_times["reference"]),
        "pairlie_samples_per_s": 1 / med(data_times["pairlie"]),
        "ratio": med(data_times["reference"]) / med(data_times["pairlie"]),
        # the loop waits for data this share of the time: one sample per batch-1 step, same process
        "pairlie_data_share_of_step": med(data_times["pairlie"]) / step,
    }

    result["infer_600x400"] = infer_figures(workers, 400, 600, 3 if quick else 7)
    # quick: pairlie only, no warm-up (the 600x400 runs warmed it up)
    result["infer_1920x1080"] = infer_figures(ours if quick else workers, 1080, 1920, 1 if quick else 3, not quick)
    folder = {kind: worker("folder", 3 if quick else 15) for kind, worker in both.items()}
    result["folder_images_per_s"] = {**folder, "ratio": folder["pairlie"] / folder["reference"]}
    result["peak_rss_mb"] = {kind: worker("peak_rss_mb") for kind, worker in workers.items()}
    for worker in workers.values():
        worker.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
