"""What every column of scripts/benchmark.py shares: the base class, the registry, the worker loop.

A column is a plug-in: a module in this folder with a :class:`Column` subclass registered under
the names of the columns it runs (``@column("pairlie_exact", "pairlie_winograd")``). Its worker
process builds it (``cls(kind, device, data, scene_limit)``), which raises :class:`Unavailable`
where it cannot run here; the parent then calls its methods by name (``infer``, ``quality``,
``train``, ...) and alternates the columns round by round.

To add a column: a new module here with a registered subclass that defines ``enhance`` (and, to
take part in the training sections, ``sample``, ``step`` and ``same_loss``); name it in
scripts/benchmark.py's lists of columns, and in ``SPEEDUPS`` for the ratios to report.
"""

from __future__ import annotations

import importlib
import pkgutil
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pairlie.model.nets import PairLIENet

REPO = Path(__file__).resolve().parents[2]
PATCH = 128
GAMMA = 0.2
# the columns' names, in the order the JSON lists them
PUBLISHED, EXACT, WINOGRAD = "published", "pairlie_exact", "pairlie_winograd"
ORT, OPENVINO, DEFAULT_MALLOC = "onnxruntime", "openvino", "pairlie_exact_default_malloc"
BF16, INT8, OPENVINO_DEFAULT = "pairlie_bf16", "pairlie_int8", "openvino_default"
ORT_INT8, DEFAULT = "onnxruntime_int8", "pairlie_default"
BENCH_EXTRA = 'pip install "pairlie[bench]"'
COLUMNS: dict[str, type[Column]] = {}


class Unavailable(Exception):
    """A column or run that cannot be measured here; the message says why (it goes into the JSON)."""


def column(*kinds: str) -> Callable[[type[Column]], type[Column]]:
    """Register a :class:`Column` subclass as the plug-in that runs the columns ``kinds``."""

    def register(cls: type[Column]) -> type[Column]:
        for kind in kinds:
            if kind in COLUMNS:
                raise ValueError(f"column {kind!r} is registered twice ({COLUMNS[kind].__name__}, {cls.__name__})")
            COLUMNS[kind] = cls
        return cls

    return register


def load_plugins() -> dict[str, type[Column]]:
    """Import every module of this folder, so that each registers its columns; the registry."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{info.name}")
    return COLUMNS


def official_net() -> PairLIENet:
    """The authors' weights where the shared folder has them, else a seeded random net (same arithmetic)."""
    weights = REPO.parent / "shared" / "weights" / "PairLIE.pth"
    if weights.is_file():
        from pairlie.model.checkpoints import load_net

        return load_net(weights)[0].eval()
    torch.manual_seed(0)
    return PairLIENet(64).eval()


def calibration_images(data: Path) -> list[Path]:
    """The 12 training images int8 columns calibrate on: 6 LOL-train-subset, 6 SICE-train (never test images)."""
    images = sorted((data / "LOL-train-subset").rglob("*.png"))[::2][:6]
    return images + sorted((data / "SICE-train").rglob("*.JPG"))[::60][:6]


class Column:
    """One column of the comparison, living in a worker process of its own; subclasses register with :func:`column`."""

    def __init__(self, kind: str, device: str, data: Path, scene_limit: int | None) -> None:
        self.kind, self.device, self.data_dir, self.scene_limit = kind, torch.device(device), data, scene_limit
        self.rng = np.random.default_rng(0)
        self.info: dict = {
            "threads": torch.get_num_threads(),
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
        }

    def describe(self) -> dict:
        return {"runs": " ".join(self.__doc__.split()), **self.info}

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

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        """The enhanced 3×H×W float image of a 3×H×W float image, on the CPU."""
        raise NotImplementedError

    # training: sides that train define sample(), step() and same_loss()
    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.sample() for _ in range(size)]
        return tuple(torch.stack(ims).to(self.device, non_blocking=True) for ims in zip(*items, strict=True))

    def train(self, steps: int, batch: int) -> list[float]:
        return self.timed(lambda: self.step(self.batch(batch)), steps)

    def data(self, count: int) -> list[float]:
        return self.timed(self.sample, count)

    def scenes(self):
        from pairlie.data.scenes import discover_scenes

        return discover_scenes(self.data_dir / "SICE-train", PATCH)[: self.scene_limit]

    def infer(self, height: int, width: int, count: int, keep: bool) -> dict:
        from pairlie.io.images import load_image, quantize

        image = load_image(sorted((self.data_dir / "LOL-test" / "low").glob("*.png"))[0])
        if image.shape[1:] != (height, width):
            image = torch.nn.functional.interpolate(image[None], (height, width), mode="bilinear")[0].clamp(0, 1)
        before = self.usage()
        out = {"times": self.timed(lambda: self.enhance(image), count)}
        out["usage"] = [b - a for a, b in zip(before, self.usage(), strict=True)]
        if keep:
            out["image"] = quantize(self.enhance(image))
        return out

    def quality(self) -> dict:
        """Mean PSNR/SSIM (the paper's protocol) of this column's output on all of LOL-test, at the columns' γ.

        γ 0.2, not LOL's 0.14: OpenVINO folds the exported model's default γ into its graph.
        """
        from pairlie.evaluate.metrics import paper_scores
        from pairlie.io.images import read_rgb, to_tensor, to_uint8

        scores = [
            paper_scores(self.enhance(to_tensor(read_rgb(low)[0])), to_uint8(read_rgb(high)[0]))
            for low, high in (
                (low, low.parent.parent / "high" / low.name)
                for low in sorted((self.data_dir / "LOL-test" / "low").glob("*.png"))
            )
        ]
        return {
            "psnr": float(np.mean([s[0] for s in scores])),
            "ssim": float(np.mean([s[1] for s in scores])),
            "count": len(scores),
        }

    def folder(self, count: int) -> float:
        """Images/s: decode, enhance, write a PNG, for the first ``count`` LOL-test photos."""
        from PIL import Image

        from pairlie.io.images import load_image, quantize

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
    """The worker process of column ``kind``: build it, then answer the parent's calls until it sends None."""
    try:
        side = load_plugins()[kind](kind, device, Path(data), scene_limit)
    except Unavailable as exc:
        conn.send(("unavailable", str(exc)))
        return
    conn.send(("ready", side.describe()))
    while True:
        request = conn.recv()
        if request is None:
            return
        name, args = request
        conn.send(getattr(side, name)(*args))
