#!/usr/bin/env python
"""Benchmark pairlie against the published PairLIE code and CPU runtimes, in one run on one machine; prints one JSON object.

    python scripts/benchmark.py [--quick] [--inference-only] [--device cpu|cuda] [--data ../shared/data]

Columns, each in a worker process of its own set up as it runs for users (plug-ins in scripts/bench/):
the published code; pairlie exact (``conv="direct"``: its ``PairLIEModule.training_step``, and its
``Enhancer``, which on a CPU streams the rows through the nets in cache-sized bands); pairlie
Winograd (``conv="winograd"``, issue 15); ONNX Runtime and OpenVINO (inference on the CPU, with
the ``bench`` extra) on the model as ``pairlie-export`` writes it, exported outside the timed
section, with torch's thread count, each output checked against pairlie exact's; in full mode
also pairlie exact without its allocator setting. Inference only: pairlie bf16 (``precision="bf16"``,
where the CPU has native bf16), pairlie int8 (``precision="int8"``, where it has int8 dot products),
ONNX Runtime on a static QDQ int8 quantisation of the same layers, and OpenVINO in its default
precision (bf16 on such CPUs), each
with its quality on LOL-test (``quality_lol``: PSNR/SSIM and the difference from pairlie exact).
``machine.cpu`` records the CPU: model, its bf16/int8 flags, PyTorch's capability.

A column that cannot run here (a runtime not installed, the Winograd path not in this pairlie) is
left out with its reason under ``skipped``. The parent alternates the workers round by round, so
slow phases of a noisy machine hit every column alike; every figure is a median over rounds after
a warm-up; GPU timings synchronise. The training step is also timed as whole processes, start-up
cancelled out: a 110-step run minus a 10-step run of the published loop and of ``pairlie-train``
(also with ``trainer.precision=bf16-mixed`` where the CPU has native bf16).
``contributions`` collects the speed-ups: what the exact path, Winograd, and the peers each give.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench.column import (
    BF16,
    DEFAULT,
    DEFAULT_MALLOC,
    EXACT,
    INT8,
    OPENVINO,
    OPENVINO_DEFAULT,
    ORT,
    ORT_INT8,
    PATCH,
    PUBLISHED,
    WINOGRAD,
    Unavailable,
    serve,
)
from bench.processes import pairlie_train, run_logged
from bench.published import Published
from bench.runtimes import AS_AVX2
from bench.tables import PAGE, update

from pairlie.infer.precision import cpu_description, native_bf16
from pairlie.model.nets import PairLIENet

# per pixel, as torch's FLOP counter counts them (tested): N, L, R forward; the useful training
# work of a pair (N, L, R on im1 and N, R on im2, forward and backward), which both sides are
# credited with although the published loop also computes the unused illumination of im2
FORWARD_FLOP_PER_PX = PairLIENet(64).forward_flops(1)
TRAIN_FLOP_PER_PX = PairLIENet(64).training_flops(1)
BF16_MIXED = "pairlie_exact_bf16_mixed"  # pairlie-train trainer.precision=bf16-mixed (whole processes only)
# (faster candidate, baseline): the speed-ups reported, time of the baseline / time of the candidate
SPEEDUPS = [
    (EXACT, PUBLISHED),
    (WINOGRAD, EXACT),
    (WINOGRAD, PUBLISHED),
    (DEFAULT_MALLOC, PUBLISHED),
    (EXACT, ORT),
    (EXACT, OPENVINO),
    (WINOGRAD, ORT),
    (WINOGRAD, OPENVINO),
    (DEFAULT, EXACT),
    (DEFAULT, OPENVINO_DEFAULT),
    (BF16, EXACT),
    (BF16, OPENVINO_DEFAULT),
    (INT8, EXACT),
    (INT8, OPENVINO_DEFAULT),
    (ORT_INT8, ORT),
    (INT8, ORT_INT8),
    (OPENVINO_DEFAULT, EXACT),
    (BF16_MIXED, EXACT),
]
BIG = (3000, 4000)  # height, width of the full mode's largest image
RSS_TARGET_MB = 1536
STARTED = time.perf_counter()


# ----------------------------------------------------------------------------- parent side


class Worker:
    def __init__(self, kind: str, args) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        limit = 12 if args.quick else None
        self.process = ctx.Process(target=serve, args=(child, kind, args.device, args.data, limit), daemon=True)
        self.process.start()
        try:
            status, self.info = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"{kind} worker failed to start (see its traceback above)") from None
        if status == "unavailable":
            self.process.join()
            raise Unavailable(self.info)
        self.start_rss_mb = self("peak_rss_mb")

    def __call__(self, name: str, *args):
        self.conn.send((name, args))
        return self.conn.recv()

    def close(self) -> None:
        """Stop the worker; one that already died (killed for memory, say) is only reaped."""
        try:
            self.conn.send(None)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.process.join()


def start(kinds: list[str], args, skipped: dict[str, str]) -> dict[str, Worker]:
    """A worker per kind that can run here; the others go into ``skipped`` with the reason."""
    workers = {}
    for kind in kinds:
        try:
            workers[kind] = Worker(kind, args)
        except Unavailable as exc:
            skipped[kind] = str(exc)
    return workers


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


def note(message: str) -> None:
    """Progress on stderr (the JSON goes to stdout), with the time since the start."""
    print(f"[{time.perf_counter() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def med(times: list[float]) -> float:
    return statistics.median(times)


def speedups(seconds: dict[str, float]) -> dict[str, float]:
    """``a_over_b``: b's time / a's time (> 1: a is faster), for the pairs of :data:`SPEEDUPS` measured."""
    return {f"{a}_over_{b}": seconds[b] / seconds[a] for a, b in SPEEDUPS if a in seconds and b in seconds}


def train_figures(timed: tuple[dict[str, list[float]], Usage], batch: int) -> dict:
    times, usage = timed
    flop = TRAIN_FLOP_PER_PX * PATCH * PATCH * batch
    out = usage.figures({kind: len(t) for kind, t in times.items()})
    for kind, t in times.items():
        out[f"{kind}_pair_steps_per_s"] = batch / med(t)
        out[f"{kind}_gflops"] = flop / med(t) / 1e9
    out["speedup"] = speedups({kind: med(t) for kind, t in times.items()})
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
    out: dict = {"size": f"{width}x{height}", "rounds": rounds}
    for kind, (faults, system, user) in usage.items():
        out[f"{kind}_page_faults_per_image"] = round(faults / rounds)
        out[f"{kind}_kernel_cpu_share"] = system / max(system + user, 1e-9)
    for kind, t in times.items():
        out[f"{kind}_s"] = med(t)
        out[f"{kind}_gflops"] = flop / med(t) / 1e9
    out["speedup"] = speedups({kind: med(t) for kind, t in times.items()})
    # the median of each round's own ratio: a busy machine's slow phases hit both sides of a ratio alike
    out["speedup_paired"] = {
        f"{a}_over_{b}": med([tb / ta for ta, tb in zip(times[a], times[b], strict=True)])
        for a, b in SPEEDUPS
        if a in times and b in times
    }
    # every output against pairlie's exact path, in grey levels of the uint8 images
    exact = images[EXACT].astype(np.int16)
    diffs = {kind: np.abs(image.astype(np.int16) - exact) for kind, image in images.items() if kind != EXACT}
    if diffs:
        out["max_grey_level_diff_vs_pairlie_exact"] = {kind: int(d.max()) for kind, d in diffs.items()}
        out["share_of_values_differing_vs_pairlie_exact"] = {kind: float((d > 0).mean()) for kind, d in diffs.items()}
        out["within_1_grey_level"] = all(int(d.max()) <= 1 for d in diffs.values())
    return out


def available_mb() -> float:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable")) / 1024


def fits_big(worker: Worker, measured: tuple[int, int]) -> str | None:
    """None where ``worker`` should fit the big image in memory, judged from its peak at ``measured``; else why not."""
    grown = max(worker("peak_rss_mb") - worker.start_rss_mb, 0.0)
    need = worker.start_rss_mb + grown * (BIG[0] * BIG[1]) / (measured[0] * measured[1])
    free = available_mb()
    if need < 0.8 * free:
        return None
    return (
        f"needs about {need / 1024:.1f} GB at {BIG[1]}x{BIG[0]} (its peak RSS so far, {measured[1]}x{measured[0]} its "
        "largest image, scaled by the pixels), "
        f"{free / 1024:.1f} GB available"
    )


def big_image(args, workers: dict[str, Worker], skipped: dict[str, str]) -> dict:
    """4000×3000: pairlie's columns in fresh workers (their peak RSS is the image's); the others where memory allows."""
    fresh = start([EXACT, WINOGRAD, BF16, INT8], args, {})
    for worker in fresh.values():
        worker("infer", 400, 600, 1, False)  # warm-up on a small image: the peak stays the big image's
    others = {}
    for kind in (PUBLISHED, ORT, OPENVINO, OPENVINO_DEFAULT):
        if kind in workers:
            reason = fits_big(workers[kind], (1080, 1920))
            if reason is None:
                others[kind] = workers[kind]
            else:
                skipped[f"{kind}_{BIG[1]}x{BIG[0]}"] = reason
    out = infer_figures({**fresh, **others}, *BIG, rounds=2, warmup=False)
    out["peak_rss_mb"] = {kind: worker("peak_rss_mb") for kind, worker in {**fresh, **others}.items()}
    out["peak_rss_note"] = "pairlie's columns in fresh workers that ran a 600x400 warm-up and this size only"
    out["peak_rss_target_mb"] = RSS_TARGET_MB
    for worker in fresh.values():
        worker.close()
    return out


# ----------------------------------------------------------------------------- whole processes


def published_loop(steps: int, data: Path, device: str) -> None:
    """The published training loop for ``steps`` batch-1 steps in this process (the whole-process timing runs it)."""
    Published(PUBLISHED, device, data, None).train(steps, 1)


def process_training(args, skipped: dict[str, str]) -> dict:
    """Seconds per training step at 128², batch 1, steady state: (T(long) - T(short)) / (long - short) of whole runs.

    The published loop runs in a process of this script; pairlie as a user runs it,
    ``pairlie-train experiment=sice``, validation off (with ten steps, its two passes over the
    SICE-test images would outweigh the steps being timed); checkpoints and logging as by default.
    """
    short, long = (10, 30) if args.quick else (10, 110)
    rounds = 1 if args.quick else 3
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    sides = {PUBLISHED: [sys.executable, str(Path(__file__).resolve()), "--data", str(Path(args.data).resolve())]}
    sides[PUBLISHED] += ["--device", args.device, "--published-loop"]
    for kind, conv in ((EXACT, "direct"), (WINOGRAD, "winograd")):
        sides[kind] = [pairlie_train(), "experiment=sice", f"paths.data_dir={Path(args.data).resolve()}"]
        sides[kind] += ["data.val_dir=null", f"trainer.accelerator={accelerator}", f"model.conv={conv}"]

    if accelerator == "gpu" or native_bf16():
        sides[BF16_MIXED] = [*sides[EXACT], "trainer.precision=bf16-mixed"]
    else:
        skipped[BF16_MIXED] = "this CPU emulates bf16 (no avx512_bf16 or amx_bf16): ~50x slower than 32-true"

    def command(kind: str, steps: int, folder: Path) -> list[str]:
        if kind == PUBLISHED:
            return [*sides[kind], str(steps)]
        return [*sides[kind], f"trainer.max_steps={steps}", f"hydra.run.dir={folder / f'{kind}-{steps}'}"]

    runs: dict[str, list[list[float]]] = {kind: [] for kind in sides}
    with tempfile.TemporaryDirectory(prefix="pairlie-bench-") as tmp:
        for r in range(rounds):
            folder = Path(tmp) / f"round{r}"
            folder.mkdir()
            seconds = {
                (kind, n): run_logged(command(kind, n, folder), folder, f"{kind}-{n}")
                for n in (short, long)
                for kind in sides
            }
            for kind in sides:
                runs[kind].append([seconds[kind, short], seconds[kind, long]])
    per_step = {kind: med([(b - a) / (long - short) for a, b in pairs]) for kind, pairs in runs.items()}
    out: dict = {
        "method": f"(T{long} - T{short}) / {long - short}: wall time of whole processes, start-up cancelled out; median of {rounds} round(s)",
        "commands": {kind: " ".join(command(kind, long, Path("RUN"))) for kind in sides},
    }
    for kind in sides:
        out[f"{kind}_s_per_step"] = per_step[kind]
        out[f"{kind}_runs_s"] = runs[kind]
    out["speedup"] = speedups(per_step)
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and sizes (about 3 min on 2 quiet CPU cores)"
    )
    parser.add_argument(
        "--inference-only", action="store_true", help="no training sections: inference speed and quality only"
    )
    parser.add_argument(
        "--columns", help="with --inference-only: only these columns (and pairlie_exact), comma-separated"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--batch", type=int, default=8, help="the larger training batch (full mode)")
    parser.add_argument(
        "--out", metavar="FILE", help="also write the JSON to FILE (docs/benchmarks/: the page's tables)"
    )
    parser.add_argument(
        "--as-avx2",
        action="store_true",
        help="hold torch's kernels to AVX2 and pairlie's CPU checks to an AVX2 CPU's flags (on an AVX-512 CPU); "
        "ONNX Runtime and OpenVINO have no such switch and are left out",
    )
    parser.add_argument(
        "--tables", action="store_true", help="only rewrite docs/benchmark.md's tables from the JSON files they name"
    )
    parser.add_argument("--check", action="store_true", help="with --tables: exit 1 when a table is not current")
    parser.add_argument(
        "--published-loop",
        type=int,
        metavar="STEPS",
        help="only run the published loop for STEPS steps (timed from outside)",
    )
    args = parser.parse_args()
    if args.tables:
        current = update(check=args.check)
        print(f"{PAGE}: " + ("current" if current else "out of date" if args.check else "rewritten"))
        sys.exit(1 if args.check and not current else 0)
    cpu = cpu_description()  # this CPU as it is; with --as-avx2, "isa" says what the workers were held to
    if args.as_avx2:  # the workers and pairlie-train processes import torch after this
        os.environ.update(AS_AVX2)
    data = Path(args.data)
    if not (data / "SICE-train").is_dir() or not (data / "LOL-test" / "low").is_dir():
        sys.exit(
            f"error: --data={data}: no SICE-train/ and LOL-test/low/ there; point --data at the shared data folder"
        )
    if args.published_loop is not None:
        published_loop(args.published_loop, data, args.device)
        return
    quick = args.quick
    skipped: dict[str, str] = {}
    training = [PUBLISHED, EXACT, WINOGRAD] + ([] if quick else [DEFAULT_MALLOC])
    kinds = training + [DEFAULT, ORT, OPENVINO, OPENVINO_DEFAULT, BF16, INT8, ORT_INT8]
    if args.columns and not args.inference_only:
        sys.exit("error: --columns needs --inference-only (the training sections compare fixed columns)")
    if args.columns:  # fewer worker processes: less for a busy machine to interleave
        chosen = args.columns.split(",")
        if unknown := set(chosen) - set(kinds):
            sys.exit(f"error: --columns: unknown {sorted(unknown)}; choose from {', '.join(kinds)}")
        kinds = [kind for kind in kinds if kind in chosen or kind == EXACT]
    workers = start(kinds, args, skipped)
    needed = (EXACT,) if args.inference_only else (EXACT, PUBLISHED)
    if any(kind not in workers for kind in needed):
        sys.exit(f"error: the {' and '.join(needed)} columns must run: {skipped}")
    trainers = {kind: workers[kind] for kind in training if kind in workers}
    rounds = 4 if quick else 10

    result: dict = {
        "machine": {
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": cpu,
            "machine": platform.machine(),
            "quick": quick,
            "date": datetime.date.today().isoformat(),
            "isa": "AVX2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)" if args.as_avx2 else None,
        },
        "columns": {kind: worker.info for kind, worker in workers.items()},
        "skipped": skipped,
        "speedup_legend": "a_over_b = time of b / time of a: above 1, a is faster",
        "conv_peak_gflops": workers[EXACT]("conv_peak", 15),
    }
    note(f"columns {sorted(workers)}; skipped {sorted(skipped)}")
    result["quality_lol"] = quality(workers)
    note("done: quality on LOL-test")
    if not args.inference_only:
        training_sections(result, args, workers, trainers, rounds)
    result["infer_600x400"] = infer_figures(workers, 400, 600, 3 if quick else 7)
    note("done: 600x400")
    # quick: pairlie's columns and what a user of OpenVINO gets, no warm-up (the 600x400 runs warmed them up)
    ours = {kind: workers[kind] for kind in (EXACT, DEFAULT, WINOGRAD, BF16, INT8, OPENVINO_DEFAULT) if kind in workers}
    result["infer_1920x1080"] = infer_figures(ours if quick else workers, 1080, 1920, 1 if quick else 3, not quick)
    note("done: 1920x1080")
    result["peak_rss_mb"] = {kind: worker("peak_rss_mb") for kind, worker in workers.items()}
    if not quick:
        folder = {kind: workers[kind]("folder", 15) for kind in (PUBLISHED, *ours) if kind in workers}
        result["folder_images_per_s"] = {**folder, "speedup": speedups({kind: 1 / v for kind, v in folder.items()})}
        # the big image runs pairlie's columns in fresh workers and the others where memory allows: the
        # workers not needed there have their figures in and free their memory (the OOM killer took one)
        for kind in [kind for kind in workers if kind not in (PUBLISHED, ORT, OPENVINO, OPENVINO_DEFAULT)]:
            workers.pop(kind).close()
        result[f"infer_{BIG[1]}x{BIG[0]}"] = big_image(args, workers, skipped)
        note(f"done: {BIG[1]}x{BIG[0]}")
    for worker in workers.values():
        worker.close()

    if not args.inference_only:
        result["train_step_whole_process"] = process_training(args, skipped)
        note("done: whole-process training runs")
    sections = [key for key in result if key.startswith(("infer_", "train_"))]
    result["contributions"] = {key: result[key]["speedup"] for key in sections if result[key]["speedup"]}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


def quality(workers: dict[str, Worker]) -> dict:
    """Each inference column's mean PSNR/SSIM on LOL-test, and its difference from pairlie exact (fp32)."""
    kinds = [kind for kind in workers if kind not in (PUBLISHED, DEFAULT_MALLOC)]  # the same fp32 arithmetic
    scores = {kind: workers[kind]("quality") for kind in kinds}
    exact = scores[EXACT]
    for score in scores.values():
        score["psnr_diff_vs_pairlie_exact"] = score["psnr"] - exact["psnr"]
        score["ssim_diff_vs_pairlie_exact"] = score["ssim"] - exact["ssim"]
    return {"gamma": 0.2, **scores}


def training_sections(result: dict, args, workers: dict[str, Worker], trainers: dict[str, Worker], rounds: int) -> None:
    """The in-process training steps (batch 1, and the larger batch in full mode) and the data loading."""
    quick = args.quick
    result["train_b1"] = train_figures(alternate(trainers, "train", rounds, 2, 1), 1)
    losses = {kind: worker("same_loss") for kind, worker in trainers.items()}
    result["train_b1"]["loss_rel_diff_vs_published"] = {
        kind: abs(loss - losses[PUBLISHED]) / abs(losses[PUBLISHED])
        for kind, loss in losses.items()
        if kind != PUBLISHED
    }
    if not quick:
        result[f"train_b{args.batch}"] = train_figures(alternate(trainers, "train", 3, 1, args.batch), args.batch)

    note("done: training steps timed in-process")
    both = {kind: workers[kind] for kind in (PUBLISHED, EXACT)}
    data_times = alternate(both, "data", rounds, 8)[0]
    step = med(alternate({EXACT: workers[EXACT]}, "train", 2, 2, 1)[0][EXACT])
    result["data"] = {
        "published_samples_per_s": 1 / med(data_times[PUBLISHED]),
        "pairlie_samples_per_s": 1 / med(data_times[EXACT]),
        "speedup": med(data_times[PUBLISHED]) / med(data_times[EXACT]),
        # the loop waits for data this share of the time: one sample per batch-1 step, same process
        "pairlie_data_share_of_step": med(data_times[EXACT]) / step,
    }


if __name__ == "__main__":
    main()
