"""Export a PairLIE checkpoint to one self-contained ONNX file (any N×3×H×W, γ an input), checked in ONNX Runtime."""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pairlie import __version__
from pairlie.errors import ConfigError, DataError, VerificationError, first_line
from pairlie.infer.enhancer import DEFAULT_GAMMA, Enhancer, input_channels, smallest_side
from pairlie.io.files import WriteError, atomic_open, check_writable_folder
from pairlie.io.images import read_rgb, to_tensor, to_uint8
from pairlie.model.checkpoints import load_net
from pairlie.specs import describe

EXPORT_EXTRA = 'pip install "pairlie[export]"'
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
# 13 is the oldest opset the graph is valid in (Clip on the int64 pixel indices); 23 the newest
# the TorchScript-based exporter of torch 2.13 writes. 17 runs on ONNX Runtime >= 1.11 and TensorRT 8.6.
ONNX_OPSETS = range(13, 24)
DEFAULT_OPSET = 17
OUTPUTS = {"enhanced": ("enhanced",), "all": ("enhanced", "illumination", "reflectance", "denoised")}
# the graph replicates thinner inputs to 2 px for the reflection padding and crops back, as the Enhancer
MIN_SIDE = 1
MAX_GREY_LEVELS = 1
# (N, H, W) checked at export: odd sizes, a batch, the smallest accepted size, a LOL-sized photo
VERIFY_SIZES = ((1, 37, 51), (2, 24, 17), (1, MIN_SIDE, MIN_SIDE), (3, 1, 5), (1, 400, 600))


class Deployable(nn.Module):
    """``forward(image, gamma)``: ``L**gamma * R`` of an N×3×H×W float image in [0, 1] (with ``"all"``: also L, R, X).

    Inputs thinner than 2 px (or the net's declared ``min_size``) are replicated to it before the
    nets (reflection padding needs two) and cropped back after, inside the graph; the index arithmetic runs on the traced shape, so
    an exported graph keeps N, H and W dynamic.
    """

    def __init__(self, net: nn.Module, outputs: str = "enhanced") -> None:
        super().__init__()
        self.net, self.outputs = net, outputs
        self.min_side = smallest_side(net)  # thinner inputs are replicated to it, as the Enhancer does

    def forward(self, image: Tensor, gamma: Tensor) -> Tensor | tuple[Tensor, ...]:
        shape = torch._shape_as_tensor(image)
        height, width = shape[2], shape[3]
        rows = torch.arange(torch.clamp(height, min=self.min_side)).clamp(max=height - 1)
        cols = torch.arange(torch.clamp(width, min=self.min_side)).clamp(max=width - 1)
        illumination, reflectance, denoised = self.net(image.index_select(2, rows).index_select(3, cols))
        keep_rows, keep_cols = torch.arange(height), torch.arange(width)
        illumination, reflectance, denoised = (
            t.index_select(2, keep_rows).index_select(3, keep_cols) for t in (illumination, reflectance, denoised)
        )
        enhanced = torch.pow(illumination, gamma) * reflectance
        if self.outputs == "all":
            return enhanced, illumination, reflectance, denoised
        return enhanced


@dataclass
class Check:
    """One verified size: the worst difference from pairlie's Enhancer over every output."""

    shape: tuple[int, ...]
    gamma: float
    grey_levels: int  # of the uint8 images (truncation of x·255, as the authors saved)
    float_diff: float  # of the float outputs, in grey levels (x 255)


@dataclass
class Report:
    """What `export` wrote and how it checked it; ``checks`` is empty when verification was skipped."""

    path: Path
    fmt: str
    gamma: float
    metadata: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    skipped: str | None = None

    @property
    def worst(self) -> Check | None:
        return max(self.checks, key=lambda c: (c.grey_levels, c.float_diff), default=None)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def contract(gamma: float, outputs: str, channels: int = 3, min_side: int = 2) -> dict[str, str]:
    """The input/output contract written into the file's metadata (``min_side``: what thinner inputs are replicated to)."""
    described = {
        "enhanced": f"float32 N×{channels}×H×W in [0, 1]: L**gamma * R",
        "illumination": "float32 N×1×H×W in [0, 1]: L",
        "reflectance": f"float32 N×{channels}×H×W in [0, 1]: R",
        "denoised": f"float32 N×{channels}×H×W in [0, 1]: X, the denoised input",
    }
    return {
        "inputs": (
            f"image: float32 N×{channels}×H×W, {'RGB, ' if channels == 3 else ''}channels first, values in [0, 1], "
            f"any N, H, W >= {MIN_SIDE}; "
            f"gamma: float32 scalar, optional, default {gamma:g}"
        ),
        "outputs": "; ".join(f"{name}: {described[name]}" for name in OUTPUTS[outputs]),
        "min_size": (
            f"{MIN_SIDE}x{MIN_SIDE} (sides under {min_side} px are replicated to {min_side} px inside the graph, "
            "then cropped)"
        ),
        "size_multiple": "1 (any H and W)",
        "quantisation": "uint8 = truncation of clip(x, 0, 1) * 255, as the PairLIE authors saved",
    }


def check_request(ckpt: Path, output: Path, fmt: str, outputs: str, opset: int, overwrite: bool) -> None:
    """One-line errors for an export that cannot be written as asked, before any work is done."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: must be one of {', '.join(FORMATS)}")
    if outputs not in OUTPUTS:
        raise ConfigError(f"outputs={outputs!r}: must be enhanced or all (also illumination, reflectance, denoised)")
    if fmt == "onnx" and (isinstance(opset, bool) or not isinstance(opset, int) or opset not in ONNX_OPSETS):
        raise ConfigError(
            f"opset={opset!r}: unsupported; choose {ONNX_OPSETS[0]} to {ONNX_OPSETS[-1]} (default {DEFAULT_OPSET})"
        )
    if output.is_dir():
        raise DataError(f"output={output}: is a folder; give a file name such as {output / ('pairlie' + FORMATS[fmt])}")
    if not output.parent.is_dir():
        ancestor = next((p for p in output.parents if os.path.lexists(p)), None)
        if ancestor is not None and not ancestor.is_dir():
            raise DataError(f"output={output}: {ancestor} is a file, not a folder; write elsewhere")
        raise DataError(f"output={output}: folder {output.parent} does not exist; create it or write elsewhere")
    if output.exists() and not output.is_file():
        raise DataError(f"output={output}: not a regular file (a FIFO, socket or device); choose another name")
    if ckpt.is_file() and output.exists() and output.resolve() == ckpt.resolve():
        raise DataError(f"output={output}: is the checkpoint being exported; choose another name")
    if output.exists() and not overwrite:
        raise DataError(f"output={output}: exists; pass overwrite=true to replace it, or choose another name")
    check_writable_folder(output.parent, "output", output)  # a read-only folder: now, not after the export and checks


def to_onnx(net: nn.Module, gamma: float, opset: int, outputs: str, metadata: dict[str, str]) -> bytes:
    """The ONNX model as bytes: weights inside, N/H/W dynamic, ``gamma`` an input defaulting to ``gamma``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ConfigError(f"format=onnx needs the onnx package: {EXPORT_EXTRA}") from None
    names = OUTPUTS[outputs]
    dynamic = {"image": {0: "N", 2: "H", 3: "W"}} | {name: {0: "N", 2: "H", 3: "W"} for name in names}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        # dynamo=False: the TorchScript-based exporter traces the shape arithmetic as graph ops and
        # writes the weights into the one proto (torch 2.13's default exporter writes a .onnx.data beside it).
        try:
            torch.onnx.export(
                Deployable(net, outputs).eval(),
                (example_image(net), torch.tensor(gamma, dtype=torch.float32)),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["image", "gamma"],
                output_names=list(names),
                dynamic_axes=dynamic,
            )
        except Exception as exc:  # a user's net with an operation the exporter cannot trace
            raise ConfigError(
                f"format=onnx: the net could not be exported ({first_line(exc)}); try format=torchscript"
            ) from None
    model = onnx.load_from_string(buffer.getvalue())
    # An initializer with an input's name is that input's default (ONNX IR >= 4): omit gamma to get the checkpoint's.
    model.graph.initializer.append(numpy_helper.from_array(np.array(gamma, dtype=np.float32), "gamma"))
    model.doc_string = "PairLIE low-light enhancement (Fu et al., CVPR 2023), exported by pairlie"
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def to_torchscript(net: nn.Module, outputs: str, metadata: dict[str, str]) -> bytes:
    """A traced TorchScript module as bytes (``gamma`` a required input), metadata in ``pairlie.json``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        try:
            traced = torch.jit.trace(Deployable(net, outputs).eval(), (example_image(net), torch.tensor(0.2)))
        except Exception as exc:
            raise ConfigError(f"format=torchscript: the net could not be traced ({first_line(exc)})") from None
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={"pairlie.json": json.dumps(metadata, indent=2)})
    return buffer.getvalue()


def example_image(net: nn.Module) -> Tensor:
    """A small input of the channels ``net`` takes, for tracing."""
    return torch.rand(1, input_channels(net) or 3, 37, 51)


Runner = Callable[[np.ndarray, float | None], list[np.ndarray]]


def onnx_runner(data: bytes) -> Runner | None:
    """A function running the ONNX model in ONNX Runtime on the CPU, or None where it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the note that gamma, having a default, can be overridden
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(image: np.ndarray, gamma: float | None) -> list[np.ndarray]:
        feed = {"image": image} if gamma is None else {"image": image, "gamma": np.array(gamma, dtype=np.float32)}
        return session.run(None, feed)

    return run


def torchscript_runner(data: bytes, default_gamma: float) -> Runner:
    module = torch.jit.load(io.BytesIO(data))

    def run(image: np.ndarray, gamma: float | None) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(image), torch.tensor(default_gamma if gamma is None else gamma))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return run


def verification_images(extra: Sequence[str | Path] = (), channels: int = 3) -> list[Tensor]:
    """The N×C×H×W images checked at export: `VERIFY_SIZES` (dark, smooth, noisy) and ``extra`` files (RGB)."""
    rng = np.random.default_rng(0)
    images = []
    for n, height, width in VERIFY_SIZES:
        ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
        ramps = np.stack([xs, ys, (xs + ys) / 2])
        ramps = np.concatenate([ramps] * -(-channels // 3))[:channels]
        base = 0.05 + 0.2 * ramps[None] * rng.random((n, channels, 1, 1))
        noisy = base + 0.02 * rng.standard_normal((n, channels, height, width))
        images.append(torch.from_numpy(noisy.clip(0, 1).astype(np.float32)))
    for path in extra:
        images.append(to_tensor(to_uint8(read_rgb(Path(path).expanduser())[0]))[None])
    return images


def _grey(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255.0).astype(np.uint8).astype(np.int16)


def verify(run: Runner, net: nn.Module, gamma: float, outputs: str, images: Sequence[Tensor]) -> list[Check]:
    """Each image through ``run`` and through pairlie's exact `Enhancer` (conv=direct); raises past `MAX_GREY_LEVELS`.

    The default γ is checked on every image, and an explicit other γ on the first, so the γ input is exercised.
    A NaN or infinite value in either output fails the check: it has no grey level to compare.
    """
    checks = []
    for index, image in enumerate(images):
        for g in (None, gamma * 0.5) if index == 0 else (None,):
            size = "×".join(map(str, image.shape))
            try:
                parts = Enhancer(net, gamma=g or gamma, device="cpu", conv="direct").decompose(image)  # the exact path
                expected = [parts.enhanced, parts.illumination, parts.reflectance, parts.denoised]
                expected = expected[: len(OUTPUTS[outputs])]
                got = run(image.numpy(), g)
            except (ConfigError, VerificationError):
                raise
            except Exception as exc:  # a net that cannot take this size: it says which, not a traceback
                raise VerificationError(
                    f"the net cannot run on a {size} image ({type(exc).__name__}: {first_line(exc)}): declare "
                    "min_size on the net (the smallest side it takes; thinner images are replicated to it), or give "
                    "verify_images of the sizes you deploy; nothing was written"
                ) from None
            for name, a, b in zip(OUTPUTS[outputs], got, expected, strict=True):
                bad = [
                    who for who, x in (("the exported model", a), ("pairlie", b.numpy())) if not np.isfinite(x).all()
                ]
                if bad:
                    raise VerificationError(
                        f"{' and '.join(bad)} computed NaN or infinite values ({name}) on a {size} image at gamma "
                        f"{g or gamma:g}: the checkpoint's weights do not compute an image; nothing was written"
                    )
            levels = max(int(np.abs(_grey(a) - _grey(b.numpy())).max()) for a, b in zip(got, expected, strict=True))
            diff = max(float(np.abs(a - b.numpy()).max()) * 255 for a, b in zip(got, expected, strict=True))
            check = Check(tuple(image.shape), g or gamma, levels, diff)
            checks.append(check)
            if levels > MAX_GREY_LEVELS:
                raise VerificationError(
                    f"the exported model differs from pairlie by {levels} grey levels on a {size} image at gamma "
                    f"{check.gamma:g} (limit {MAX_GREY_LEVELS}); nothing was written"
                )
    return checks


def export(
    ckpt_path: str | Path,
    output: str | Path,
    fmt: str = "onnx",
    gamma: float | None = None,
    outputs: str = "enhanced",
    opset: int = DEFAULT_OPSET,
    verify_on: bool = True,
    verify_images: Sequence[str | Path] = (),
    overwrite: bool = False,
    trust: str | list[str] | None = None,
) -> Report:
    """Write ``ckpt_path`` as one deployable file at ``output``, verified first; returns what was done.

    The file is built and verified in memory and written through a temporary name and a rename, so
    a refused or failed export leaves nothing behind. ``gamma`` defaults to the checkpoint's.
    """
    ckpt, output = Path(ckpt_path).expanduser(), Path(output).expanduser()
    check_request(ckpt, output, fmt, outputs, opset, overwrite)
    net, hparams = load_net(ckpt, trust)
    gamma = float(hparams.get("gamma", DEFAULT_GAMMA) if gamma is None else gamma)
    if not gamma > 0:
        raise ConfigError(f"model.gamma={gamma!r}: must be a number > 0 (0.2 for SICE, 0.14 for LOL)")
    metadata = {
        "pairlie_version": __version__,
        "source_checkpoint": ckpt.name,
        "source_sha256": file_sha256(ckpt),
        "gamma": f"{gamma:g}",
        "net": describe(net).get("_target_", type(net).__name__),
        **({"width": str(net.width)} if isinstance(getattr(net, "width", None), int) else {}),
        **({"opset": str(opset)} if fmt == "onnx" else {"torch_version": torch.__version__}),
        **contract(gamma, outputs, input_channels(net) or 3, smallest_side(net)),
    }
    if fmt == "onnx":
        data = to_onnx(net, gamma, opset, outputs, metadata)
        run, skipped = onnx_runner(data), f"onnxruntime is not installed ({EXPORT_EXTRA} to verify)"
    else:
        data = to_torchscript(net, outputs, metadata)
        run, skipped = torchscript_runner(data, gamma), None
    report = Report(output, fmt, gamma, metadata)
    if run is None:
        report.skipped = skipped
    else:
        report.checks = (
            verify(run, net, gamma, outputs, verification_images(verify_images, input_channels(net) or 3))
            if verify_on
            else []
        )
        report.skipped = None if verify_on else "verify=false"
    try:
        with atomic_open(output, "wb") as fh:
            fh.write(data)
    except WriteError as exc:  # a disk that filled up meanwhile: nothing is left, an existing output is intact
        raise DataError(f"output={output}: {exc}; nothing was written") from None
    return report
