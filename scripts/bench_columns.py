"""The columns of scripts/benchmark.py, each living in a worker process of its own, set up as it runs for users.

- ``published``: the published loop written plainly (both exposures through all three nets, the
  unused illumination of the second included; eager fp32; two full images decoded from disk for
  every sample; the default allocator) and whole-image inference.
- ``pairlie_exact``: ``PairLIEModule.training_step`` (decoded scenes cached, no second
  illumination) with the module's own optimiser, stepped in Lightning's order, and the ``Enhancer``
  with ``conv="direct"``, which on a CPU streams the rows through the nets in cache-sized bands.
  The process sets ``pairlie.io.speed.keep_freed_memory()`` as pairlie's CLIs do.
- ``pairlie_winograd``: the same with ``conv="winograd"``; ``pairlie_exact_default_malloc``: the
  exact column without the allocator setting.
- ``pairlie_bf16``: the Enhancer with ``precision="bf16"`` (inference only; refused where the CPU
  emulates bf16, which would take an hour). ``pairlie_int8``: ``precision="int8"``, calibrated on
  12 training images (6 LOL-train-subset, 6 SICE-train; never test images); refused where the CPU
  has no int8 dot products, as pairlie refuses it.
- ``onnxruntime``, ``openvino``: the model as pairlie's exporter writes it (N, H, W dynamic,
  reflection padding inside), exported when the worker starts, run on the CPU with torch's thread count;
  ``openvino`` in fp32, ``openvino_default`` in OpenVINO's default precision (bf16 where the CPU has it):
  what a user who exports pairlie's model gets.

A column that cannot run here raises :class:`bench_common.Unavailable` when its worker starts.
"""

from __future__ import annotations

import importlib
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from bench_common import Unavailable

from pairlie.errors import ConfigError
from pairlie.infer.precision import native_bf16
from pairlie.model.nets import PairLIENet

REPO = Path(__file__).resolve().parents[1]
PATCH = 128
GAMMA = 0.2
PUBLISHED, EXACT, WINOGRAD = "published", "pairlie_exact", "pairlie_winograd"
ORT, OPENVINO, DEFAULT_MALLOC = "onnxruntime", "openvino", "pairlie_exact_default_malloc"
BF16, INT8, OPENVINO_DEFAULT = "pairlie_bf16", "pairlie_int8", "openvino_default"
ORT_INT8 = "onnxruntime_int8"
LAST_BLOCK = ("layers.12", "layers.13", "layers.14")  # the official nets' last [pad, conv, sigmoid]
PAIRLIE_CONV = {EXACT: "direct", WINOGRAD: "winograd", DEFAULT_MALLOC: "direct", BF16: "direct", INT8: "direct"}
PAIRLIE_PRECISION = {BF16: "bf16", INT8: "int8"}  # the others: fp32
BENCH_EXTRA = 'pip install "pairlie[bench]"'


def official_net() -> PairLIENet:
    """The authors' weights where the shared folder has them, else a seeded random net (same arithmetic)."""
    weights = REPO.parent / "shared" / "weights" / "PairLIE.pth"
    if weights.is_file():
        from pairlie.model.checkpoints import load_net

        return load_net(weights)[0].eval()
    torch.manual_seed(0)
    return PairLIENet(64).eval()


class Side:
    """One column of the comparison, living in its own process."""

    def __init__(self, kind: str, device: str, data: Path, scene_limit: int | None) -> None:
        self.kind, self.device, self.data_dir, self.scene_limit = kind, torch.device(device), data, scene_limit
        self.rng = np.random.default_rng(0)
        self.info: dict = {"threads": torch.get_num_threads()}

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


def published_loss(net, im1: torch.Tensor, im2: torch.Tensor) -> torch.Tensor:
    from pairlie.model.losses import consistency_loss, fidelity_loss, retinex_loss

    L1, R1, X1 = net(im1)
    L2, R2, X2 = net(im2)  # the published loop computes L2 although no loss uses it
    return consistency_loss(R1, R2) + retinex_loss(L1, R1, im1, X1) + 500 * fidelity_loss(im1, X1)


class Published(Side):
    """The published code: its training loop written plainly (images decoded from disk every step), whole-image inference."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.infer_net = official_net().to(self.device)
        self.paths = None

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        if self.paths is None:
            self.paths = [scene.paths for scene in self.scenes()]
            torch.manual_seed(0)
            self.net = PairLIENet(64).to(self.device)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        paths = self.paths[self.rng.integers(len(self.paths))]
        first, second = self.rng.choice(len(paths), 2, replace=False)
        ims = [
            torch.from_numpy(np.array(Image.open(paths[i]).convert("RGB"))).permute(2, 0, 1).float() / 255
            for i in (first, second)
        ]
        top = self.rng.integers(0, ims[0].shape[1] - PATCH + 1)
        left = self.rng.integers(0, ims[0].shape[2] - PATCH + 1)
        return tuple(im[:, top : top + PATCH, left : left + PATCH] for im in ims)

    def step(self, batch) -> None:
        loss = published_loss(self.net, *batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def same_loss(self) -> float:
        """The loss of fixed weights on fixed inputs: every training column must agree."""
        net, im1, im2 = fixed_inputs(self.device)
        with torch.no_grad():
            return published_loss(net, im1, im2).item()

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        from pairlie.model.nets import enhance

        with torch.no_grad():
            L, R, _ = self.infer_net(image[None].to(self.device))
            return enhance(L, R, GAMMA)[0].cpu()


def fixed_inputs(device: torch.device) -> tuple[PairLIENet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    net = PairLIENet(64).to(device)
    im1, im2 = torch.rand(2, 1, 3, PATCH, PATCH, device=device)
    return net, im1, im2


class Pairlie(Side):
    """pairlie: PairLIEModule.training_step with its configured Adam, stepped in Lightning's order; the Enhancer."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        from pairlie.infer.enhancer import Enhancer

        if self.kind != DEFAULT_MALLOC:
            from pairlie.io.speed import keep_freed_memory

            keep_freed_memory()
        self.conv = PAIRLIE_CONV[self.kind]
        precision = PAIRLIE_PRECISION.get(self.kind, "fp32")
        if precision == "bf16" and self.device.type == "cpu" and not native_bf16():
            raise Unavailable("this CPU emulates bf16 (no avx512_bf16 or amx_bf16): ~50x slower than fp32")
        calibration = calibration_images(self.data_dir) if precision == "int8" else None
        try:
            self.enhancer = Enhancer(
                official_net(),
                gamma=GAMMA,
                device=str(self.device),
                conv=self.conv,
                precision=precision,
                calibration=calibration,
            )
        except ConfigError as error:  # int8 on a CPU without VNNI/AMX, or off the CPU
            raise Unavailable(str(error)) from None
        resolved = self.enhancer.conv
        if resolved != self.conv:
            raise Unavailable(f"Enhancer(conv={self.conv!r}) runs conv={resolved!r} here")
        self.info.update(conv=resolved, precision=self.enhancer.precision, enhancer=repr(self.enhancer))
        self.module = None
        # training_step logs through self.log, which outside a Trainer only warns: Lightning's logging
        # is timed in the whole-process runs
        warnings.filterwarnings("ignore", r"You are trying to `self.log\(\)`")

    def training_module(self):
        from pairlie.train.module import PairLIEModule

        return PairLIEModule(width=64, conv=self.conv).to(self.device)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.module is None:
            from pairlie.data.datasets import ExposurePairDataset

            self.dataset = ExposurePairDataset(self.scenes(), patch_size=PATCH)
            torch.manual_seed(0)
            self.module = self.training_module()
            self.opt = self.module.configure_optimizers()["optimizer"]
            self.steps = 0
        return self.dataset[int(self.rng.integers(len(self.dataset)))]

    def step(self, batch) -> None:
        # Lightning's automatic optimisation, in its order: the step, zero_grad, backward, the
        # before-optimizer-step hook (pairlie's non-finite check), the optimizer
        loss = self.module.training_step(batch, self.steps)
        self.opt.zero_grad()
        loss.backward()
        self.module.on_before_optimizer_step(self.opt)
        self.opt.step()
        self.steps += 1

    def same_loss(self) -> float:
        net, im1, im2 = fixed_inputs(self.device)
        module = self.training_module()
        module.net.load_state_dict(net.state_dict())
        with torch.no_grad():
            return module.training_step((im1, im2), 0).item()

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        return self.enhancer.decompose(image).enhanced[0]


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
    try:
        return importlib.import_module(name)
    except ImportError:
        raise Unavailable(f"{name} is not installed ({BENCH_EXTRA})") from None


def calibration_images(data: Path) -> list[Path]:
    """The 12 training images int8 columns calibrate on: 6 LOL-train-subset, 6 SICE-train (never test images)."""
    images = sorted((data / "LOL-train-subset").rglob("*.png"))[::2][:6]
    return images + sorted((data / "SICE-train").rglob("*.JPG"))[::60][:6]


def qdq_model(data: Path) -> bytes:
    """pairlie's exported model with ONNX Runtime's static QDQ int8 quantisation of the layers pairlie's int8 runs
    in int8 (N's and L's ReLU layers; R and the last layers stay fp32), MinMax-calibrated on 256x256 crops."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from pairlie.io.images import load_image

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            crops = [load_image(path)[None, :, :256, :256].numpy() for path in calibration_images(data)]
            self.feeds = iter({"image": crop} for crop in crops)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(onnx_model())
        import onnx

        nodes = [node.name for node in onnx.load(source).graph.node]
        # /net/<part>/layers/layers.<i>/<op>: the official net's last block is layers 12-14
        in_int8 = [n.split("/")[2:5:2] for n in nodes]
        float_nodes = [
            n
            for n, where in zip(nodes, in_int8, strict=True)
            if len(where) < 2 or where[0] not in ("denoiser", "illumination") or where[1] in LAST_BLOCK
        ]
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes,
        )  # fmt: skip
        return target.read_bytes()


class OnnxRuntime(Side):
    """ONNX Runtime, CPU execution provider, intra-op threads = torch's threads, on pairlie's exported model.

    ``onnxruntime_int8``: on its static QDQ int8 quantisation (:func:`qdq_model`).
    """

    def __init__(self, *args) -> None:
        super().__init__(*args)
        ort = cpu_runtime(self.device, "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # not the note that gamma, having a default, can be overridden
        model = qdq_model(self.data_dir) if self.kind == ORT_INT8 else onnx_model()
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.info.update(version=ort.__version__, intra_op_num_threads=options.intra_op_num_threads)

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        feed = {"image": image[None].numpy()}
        if "gamma" in self.inputs:
            feed["gamma"] = np.array(GAMMA, dtype=np.float32)
        return torch.from_numpy(self.session.run(None, feed)[0][0])


class OpenVino(Side):
    """OpenVINO on the CPU, INFERENCE_NUM_THREADS = torch's threads, fp32, latency hint, on pairlie's exported model."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        ov = cpu_runtime(self.device, "openvino")
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        if self.kind == OPENVINO:
            config["INFERENCE_PRECISION_HINT"] = "f32"  # not bf16 where the CPU has it: the exact path's arithmetic
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pairlie.onnx"
            path.write_bytes(onnx_model())
            compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", config)
        self.request, self.output = compiled.create_infer_request(), compiled.outputs[0]
        # γ, having a default in the file, becomes a constant in OpenVINO's graph
        self.inputs = [port.get_any_name() for port in compiled.inputs]
        chosen = compiled.get_property("INFERENCE_PRECISION_HINT")  # what the default turned into on this CPU
        self.info.update(
            version=ov.__version__, inference_precision=str(chosen), **{k: str(v) for k, v in config.items()}
        )

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        feed = {"image": image[None].numpy()}
        if "gamma" in self.inputs:
            feed["gamma"] = np.array(GAMMA, dtype=np.float32)
        return torch.from_numpy(self.request.infer(feed)[self.output][0].copy())


SIDES = {PUBLISHED: Published, EXACT: Pairlie, WINOGRAD: Pairlie, DEFAULT_MALLOC: Pairlie, ORT: OnnxRuntime}
SIDES.update({OPENVINO: OpenVino, OPENVINO_DEFAULT: OpenVino, BF16: Pairlie, INT8: Pairlie, ORT_INT8: OnnxRuntime})


def serve(conn, kind: str, device: str, data: str, scene_limit: int | None) -> None:
    try:
        side = SIDES[kind](kind, device, Path(data), scene_limit)
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
