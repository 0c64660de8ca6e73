"""Enhance images of any size: the decomposition, gamma, tiling and conversion from and to user types."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from pairlie.errors import ConfigError
from pairlie.infer import int8, streaming, winograd
from pairlie.infer import precision as precisions
from pairlie.infer.receptive import alignment, declares, min_size, receptive_radius, unknown_layer
from pairlie.infer.streaming import split, streamable
from pairlie.io.images import quantize, to_tensor
from pairlie.model.checkpoints import load_net
from pairlie.model.nets import enhance
from pairlie.model.weights import is_official, official_weights

log = logging.getLogger("pairlie")

# The paper's nets: N then L (or R), ten 3x3 convolutions, so an output pixel sees 10 pixels each way.
# Other nets declare or derive their own (pairlie.infer.receptive).
RECEPTIVE_RADIUS = 10
# tile="auto": a CPU streams rows through the paper's nets in cache-sized bands (pairlie.infer.streaming.stream)
# and runs other nets in tiles of CPU_TILE where their receptive radius is known; a GPU (CUDA or
# Apple's MPS) runs tiles of this size.
AUTO_TILE = {"cpu": None, "cuda": 1024, "mps": 1024}
CPU_TILE = 512
DEFAULT_GAMMA = 0.2
# a declared tiling contract holds when tiles equal the whole-image forward to this on a random
# probe (outputs in [0, 1]; float rounding is ~1e-6, a shifted sampling grid ~1e-2)
TILE_TOLERANCE = 1e-4
# model.gamma=auto searches this range, to 3 decimals: 0.01 is far brighter than any γ the authors
# used, 1 gives L·R ≈ the (denoised) input itself
AUTO_GAMMA_RANGE = (0.01, 1.0)


@dataclass
class Decomposition:
    """PairLIE's outputs for a batch of images, each N×C×H×W float32 in [0, 1] on the CPU.

    Attributes:
        illumination: L, one channel (C=1).
        reflectance: R, the scene's colours without its lighting (C=3).
        denoised: X, the input after the denoiser N (C=3); input − X is the noise removed.
        enhanced: I, the enhanced image `L**gamma * R` (C=3).
    """

    illumination: Tensor
    reflectance: Tensor
    denoised: Tensor
    enhanced: Tensor


def resolve_device(device: str) -> torch.device:
    """``device`` as a torch device; ``auto`` is CUDA where present, else the CPU (``mps`` only when asked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"device={device!r}: must be auto, cpu, cuda, cuda:<index> or mps")
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device=mps: PyTorch reports no Apple GPU (MPS) here; use device=cpu or device=auto")
        return torch.device("mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA GPU is available here; use device=cpu or device=auto")
    resolved = torch.device(device)
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.index is not None and resolved.index >= count:
        raise ConfigError(
            f"device={device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}; pick one of them"
        )
    return resolved


def to_device(tensor: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``tensor`` on ``device`` as ``dtype``; asynchronous only towards a GPU.

    A non-blocking copy from a GPU to the CPU returns before the data has arrived, and nothing
    here would wait for it; towards a GPU, the kernels that read the copy are queued after it.
    """
    return tensor.to(device, dtype, non_blocking=device.type == "cuda")


def gamma_for_brightness(illumination: Tensor, reflectance: Tensor, target: float) -> float:
    """The γ (3 decimals, within 0.01–1) whose ``L**γ · R`` has mean brightness ``target`` (0–1, over pixels and channels).

    The mean of ``L**γ · R`` falls as γ rises (L ≤ 1), so a bisection finds it; a target brighter than
    γ = 0.01 gives or darker than γ = 1 gives is met as nearly as the range allows.
    """
    light = illumination.reshape(-1).double().clamp(0, 1)
    colour = reflectance.mean(dim=-3).reshape(-1).double()  # mean over channels first: same mean

    def brightness(gamma: float) -> float:
        return float((light**gamma * colour).mean())

    low, high = AUTO_GAMMA_RANGE
    if brightness(low) <= target:
        return low
    if brightness(high) >= target:
        return high
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if brightness(mid) > target else (low, mid)
    # the grid value nearest the target, so that model.gamma=<printed γ> gives the same image
    candidates = {round(g, 3) for g in (low, high, np.floor(low * 1000) / 1000, np.ceil(high * 1000) / 1000)}
    return min(sorted(candidates), key=lambda g: abs(brightness(g) - target))


def input_channels(net: torch.nn.Module) -> int | None:
    """The channels ``net`` takes: its ``channels`` attribute, else its first Conv2d's input channels, else None."""
    channels = getattr(net, "channels", None)
    if isinstance(channels, int):
        return channels
    first = next((m for m in net.modules() if isinstance(m, torch.nn.Conv2d)), None)
    return first.in_channels if first is not None else None


def smallest_side(net: torch.nn.Module) -> int:
    """The side thinner images are replicated to before ``net`` (and cropped back after): 2 for reflection padding, or the net's ``min_size``."""
    return max(2, min_size(net))


def checked_outputs(outputs, shape: torch.Size) -> tuple[Tensor, ...]:
    """A net's ``(illumination, reflectance, denoised)`` as fp32 CPU tensors, each the input's size; one line otherwise."""
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 3 or any(t.shape[-2:] != shape[-2:] for t in outputs):
        shapes = [tuple(t.shape) for t in outputs] if isinstance(outputs, (tuple, list)) else type(outputs)
        raise ConfigError(
            f"the net's forward must return (illumination, reflectance, denoised) the size of its input "
            f"{tuple(shape)}; it returned {shapes}"
        )
    return tuple(t.float().cpu().contiguous() for t in outputs)


def dependence_radius(net: torch.nn.Module, channels: int, radius: int, align: int, device: torch.device) -> int:
    """How far (in pixels, each way) ``net``'s output pixels reach into a random input, measured by the gradient.

    Output pixels at every phase of the ``align`` grid, in the middle of an input wide enough to
    show a reach of twice ``radius``; input pixels whose gradient is exactly zero do not count. A
    reach to the probe's edge is returned as that distance (a global layer reaches further).
    """
    half = 2 * radius + 4 * align + 8
    size = 2 * half + align
    generator = torch.Generator().manual_seed(1)
    probe = torch.rand(1, channels, size, size, generator=generator).to(device).requires_grad_(True)
    outputs = net(probe)
    reach = 0
    for i, (row, col) in enumerate((half + a, half + b) for a in range(align) for b in range(align)):
        (grad,) = torch.autograd.grad(
            sum(out[..., row, col].sum() for out in outputs), probe, retain_graph=i < align * align - 1
        )
        rows, cols = (grad.abs().sum(dim=(0, 1)).cpu() > 0).nonzero(as_tuple=True)
        if rows.numel():
            reach = max(reach, int((rows - row).abs().max()), int((cols - col).abs().max()))
    return reach


def tile_forward(run, batch: Tensor, tile: int, overlap: int, align: int = 1) -> tuple[Tensor, ...]:
    """The net's outputs over ``batch`` computed tile by tile: ``run(patch, borders)`` on each tile with its context.

    Tiles start and end on multiples of ``align`` (`pairlie.infer.streaming.split`); each carries
    ``overlap`` pixels of context, which is computed and discarded.
    """
    n, _, height, width = batch.shape
    fulls: list[Tensor] = []
    for top, bottom, ctop, cbottom in split(height, tile, overlap, align):
        for left, right, cleft, cright in split(width, tile, overlap, align):
            borders = (ctop == 0, cbottom == height, cleft == 0, cright == width)
            outs = run(batch[..., ctop:cbottom, cleft:cright], borders)
            if not fulls:  # the output channels are the net's: L, R, X
                fulls = [torch.empty(n, out.shape[1], height, width) for out in outs]
            inner = (..., slice(top - ctop, bottom - ctop), slice(left - cleft, right - cleft))
            for full, out in zip(fulls, outs, strict=True):
                full[..., top:bottom, left:right] = out[inner]
    return tuple(fulls)


class Enhancer:
    """Enhances PIL images, uint8 H×W×3 arrays or float tensors with a trained PairLIE model.

    [`enhance`][pairlie.Enhancer.enhance] takes and returns the same kind: a PIL image (RGB, or RGBA
    whose alpha is kept), a uint8 NumPy array H×W×3 (RGB, channels last), or a float tensor 3×H×W or
    N×3×H×W (RGB, channels first, values in [0, 1]) on any device.
    [`decompose`][pairlie.Enhancer.decompose] takes a float tensor and returns its
    [`Decomposition`][pairlie.infer.enhancer.Decomposition]. The net passed in is copied, never
    changed. Every tiling mode equals whole-image inference up to float rounding, with memory
    bounded by the band or tile.

    Args:
        net: The paper's [`PairLIENet`][pairlie.model.nets.PairLIENet] or any module whose
            `forward(im)` returns `(illumination, reflectance, denoised)`. The fast paths (streamed
            rows, Winograd, int8) run only where [`streamable`][pairlie.infer.streaming.streamable]
            proves the net has the paper's structure and its weights are finite (their fused ReLUs
            would turn NaN into 0); any other net runs whole or in tiles with its own receptive
            radius ([`receptive_radius`][pairlie.infer.receptive.receptive_radius]), so NaN
            weights give NaN, as the net's own `forward` does.
        gamma: γ of the enhanced image `I = L**gamma * R`, a number > 0 (the authors used 0.14 on
            LOL, 0.2 on SICE). Default 0.2.
        device: `"auto"` (CUDA where present, else the CPU), `"cpu"`, `"cuda"`, `"cuda:<index>"` or
            `"mps"`.
        half: 16-bit inference on a CUDA GPU: the older spelling of `precision="fp16"`.
        tile: `"auto"`, an int, or `None` for whole images. `"auto"` on a CPU streams the rows through
            the paper's nets (with finite weights) in cache-sized bands, computing each pixel once, and runs other nets in
            tiles of 512 pixels where their receptive radius is known, else whole; on a GPU it means
            tiles of 1024. An int (16 or more) splits the image into equal tiles of at most that size.
        overlap: Pixels of context around each tile, computed and discarded. `None`: the net's
            receptive radius (10 for the paper's nets), which is also the least allowed.
        conv: `"auto"` computes the 3x3 convolutions by Winograd's algorithm on a CPU where NNPACK
            runs and measures faster, else directly; `"winograd"` insists (a `ConfigError` where it
            cannot run); `"direct"` is the exact path. Both agree to float rounding; a Winograd call
            that fails at run time falls back to the direct path with a warning.
        precision: `"auto"` runs the convolutions in bf16 on a CPU that computes bf16 natively
            (AVX512_BF16, AMX) when `conv="auto"`, else in fp32; `"fp32"` is the exact path;
            `"bf16"` insists (CPU or CUDA); `"fp16"` runs on CUDA. In bf16 the nets' sigmoid outputs
            and `L**gamma` stay fp32, the ReLUs run inside the convolutions, `tile="auto"` computes
            bands of rows with recomputed context, and Winograd does not apply. `"int8"` (CPU, the
            paper's nets, `tile="auto"`) runs N's and L's ReLU layers in int8 and the rest in bf16
            (fp32 on a CPU without native bf16).
        calibration: For `precision="int8"` only, which needs it: image paths, a folder, PIL images,
            uint8 arrays or float tensors like the ones to enhance (12 are used).

    Attributes:
        gamma (float): The γ every image is enhanced with.
        device (torch.device): Where the net runs.
        conv (str): The convolution that runs: `"winograd"` or `"direct"`.
        precision (str): The precision that runs: `"fp32"`, `"bf16"`, `"fp16"` or `"int8"`.

    Raises:
        ConfigError: An argument that cannot work here, in one line naming it and the fix (a
            `pairlie.errors.PairLIEError`).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        gamma: float = DEFAULT_GAMMA,
        device: str = "auto",
        half: bool = False,
        tile: int | str | None = "auto",
        overlap: int | None = None,
        conv: str = "auto",
        precision: str = "auto",
        calibration: Iterable | str | Path | None = None,
    ) -> None:
        if not isinstance(gamma, (int, float)) or gamma <= 0:
            raise ConfigError(f"model.gamma={gamma!r}: must be a number > 0 (0.2 for SICE, 0.14 for LOL)")
        # the one check that decides whether the specialised paths apply: the paper's nets, with finite
        # weights (their fused ReLUs map NaN to 0; the generic path's output keeps NaN, as the net's own does)
        finite = all(bool(torch.isfinite(p).all()) for p in net.parameters())
        self.fast = streamable(net) and finite
        self.channels = input_channels(net)
        radius = receptive_radius(net)
        self.device = resolve_device(device)
        # bf16's quality is measured for the paper's nets: for any other net precision=auto keeps fp32
        self.precision = precisions.resolve(precision, self.device, conv=conv if self.fast else "direct", half=half)
        explicit_tile = tile not in ("auto", None)
        self.stream = tile == "auto" and self.device.type == "cpu" and self.fast
        if tile == "auto":
            tile = AUTO_TILE[self.device.type] if self.fast or self.device.type != "cpu" else CPU_TILE
            if radius is None:
                if tile is not None:
                    log.info(
                        "the net's receptive radius is unknown (%s): whole images, memory not bounded; declare an "
                        "int attribute receptive_radius on the net to tile",
                        unknown_layer(net),
                    )
                tile = None
        if tile is not None and (not isinstance(tile, int) or tile < 16):
            raise ConfigError(f"tile={tile!r}: must be auto, null (whole image) or an integer >= 16")
        if explicit_tile and radius is None:
            raise ConfigError(
                f"tile={tile}: this net's receptive radius is unknown ({unknown_layer(net)}): declare an int attribute "
                "receptive_radius on the net, or use tile=null (whole images)"
            )
        if overlap is None:
            overlap = radius if radius is not None else 0
        if radius is not None and overlap < radius:
            raise ConfigError(f"overlap={overlap}: must be at least the net's receptive radius {radius}")
        self.align, self.min_side = alignment(net), smallest_side(net)
        if tile is not None and tile < self.align:
            raise ConfigError(f"tile={tile}: must be at least the net's alignment {self.align} (its total stride)")
        self.gamma = float(gamma)
        self.tile, self.overlap, self.radius = tile, overlap, radius
        self.dtype = precisions.DTYPES[self.precision]
        if not finite and (conv == "winograd" or self.precision == "int8"):
            setting, exact = ("conv=winograd", "conv=direct") if conv == "winograd" else ("precision=int8", "fp32")
            raise ConfigError(
                f"{setting}: the net's weights hold NaN or infinite values; {exact} computes them as they are"
            )
        if calibration is not None and self.precision != "int8":
            raise ConfigError(f"calibration: only precision=int8 uses calibration images; this runs {self.precision}")
        self.int8 = self._int8(net, calibration) if self.precision == "int8" else None
        if self.int8 is not None and not precisions.native_bf16():
            self.dtype = torch.float32  # the layers int8 leaves out: emulated bf16 would be ~50x slower
        if conv == "winograd" and not self.fast:
            raise ConfigError("conv=winograd: runs the paper's nets only; this net takes conv=direct (or auto)")
        # Winograd (NNPACK) computes in fp32 only
        self.conv = winograd.resolve(conv, self.device) if self.fast and self.precision == "fp32" else "direct"
        # bf16 and int8 compute bands of rows with recomputed context (streaming.banded), and so does direct fp32
        # on a CPU without AVX-512 (its ReLUs fused: faster there, same numbers); fp32 elsewhere streams rows
        fp32_bands = self.dtype == torch.float32 and self.conv == "direct" and precisions.fp32_bands()
        self.banded = self.stream and (self.dtype == torch.bfloat16 or self.int8 is not None or fp32_bands)
        # Channels-last lets oneDNN pick faster kernels, same arithmetic up to float rounding: on a 2-core
        # AVX2 CPU, 194 vs 173 GFLOP/s for the 64->64 convs and 48 vs 28 for 64->3, on a 66k-pixel band.
        # A GPU runs the nets as they are, with ReflectionPad2d, which CUDA implements in NCHW only:
        # channels-last there would copy every feature map twice per layer.
        # NNPACK (conv=winograd) reads NCHW.
        cpu_format = torch.contiguous_format if self.conv == "winograd" else torch.channels_last
        self.memory_format = cpu_format if self.device.type == "cpu" else torch.contiguous_format
        # a copy: the caller's net keeps its device, dtype, layout and training mode
        self.net = copy.deepcopy(net).eval().to(self.device, self.dtype, memory_format=self.memory_format)
        if self.tile is not None and not self.stream and declares(net):
            self._prove_tiles(net, explicit_tile)

    def _prove_tiles(self, net: torch.nn.Module, explicit: bool) -> None:
        """Check a declared ``receptive_radius``/``alignment`` once: tiles must equal the whole-image forward.

        Two probes in fp32: the input pixels a block of output pixels depends on (where the gradient
        is not exactly zero) must lie within the radius, and a random image cut by tiles small
        enough to have inner edges must come out as it does whole, through the same tiling code
        (a wrong alignment shifts the sampling grid). A net whose declaration does not hold is
        refused with an explicit ``tile`` (ConfigError) and runs whole images with ``tile="auto"``
        (a warning). Derived radii (the paper's nets, ``nn.Sequential`` of known layers) need no probe.
        """
        probe_net = copy.deepcopy(net).eval().to(self.device, torch.float32).requires_grad_(False)
        align, margin = self.align, -(-self.overlap // self.align) * self.align
        try:
            reach = dependence_radius(probe_net, self.channels or 3, self.overlap, align, self.device)
        except Exception as exc:  # a net without a backward: the tile probe below still runs
            log.debug("no gradient probe of the receptive radius (%s)", exc)
            reach = None
        if reach is not None and reach > self.overlap:
            self._refuse_tiles(
                f"its outputs depend on input pixels {reach} away, more than its declared receptive_radius "
                f"{self.radius} (overlap {self.overlap}): declare receptive_radius={reach} or more on the net",
                explicit,
            )
            return
        tile = -(-max(16, 2 * align) // align) * align
        height = 3 * tile + 2 * margin + align + 1  # inner tiles clear of the borders, a ragged last tile
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand(1, self.channels or 3, height, height + 2, generator=generator)

        def run(patch: Tensor, borders) -> tuple[Tensor, ...]:
            return checked_outputs(probe_net(patch.to(self.device)), patch.shape)

        try:
            with torch.no_grad():
                whole = run(probe, (True, True, True, True))
                tiled = tile_forward(run, probe, tile, self.overlap, align)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"tile={self.tile}: the net failed on a {height}x{height + 2} probe of its tiling ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); use tile=null (whole images)"
            ) from None
        worst = max(float((a - b).abs().max()) for a, b in zip(whole, tiled, strict=True))
        if worst > TILE_TOLERANCE:
            self._refuse_tiles(
                f"its tiles differ from its whole-image forward by up to {worst:.3g} on a random probe (declared "
                f"receptive_radius={self.radius}, alignment={align}): declare the true receptive_radius and "
                "alignment (the net's total stride) on the net",
                explicit,
            )

    def _refuse_tiles(self, what: str, explicit: bool) -> None:
        if explicit:
            raise ConfigError(f"tile={self.tile}: {what}, or use tile=null (whole images)")
        log.warning("tile=auto: %s; running whole images meanwhile (memory not bounded)", what)
        self.tile = None

    def _int8(self, net: torch.nn.Module, calibration) -> int8.Int8Net:
        """N's and L's int8 layers, calibrated on ``calibration``; ConfigError, one line, where int8 cannot run."""
        if reason := int8.unfit(net):
            raise ConfigError(f"precision=int8: {reason}; use precision=bf16 or fp32")
        if not self.stream:
            given = "null" if self.tile is None else self.tile
            raise ConfigError(f"precision=int8 computes in bands of rows: use tile=auto, not tile={given}")
        if calibration is None:
            raise ConfigError(
                "precision=int8 needs calibration images: a folder or a few photos like the ones to enhance "
                "(Enhancer(..., calibration=[...]); calibration=DIR on the command line)"
            )
        fp32 = copy.deepcopy(net).float().eval().cpu()  # quantised from the fp32 weights
        return int8.Int8Net(fp32, int8.calibration_images(calibration))

    def __repr__(self) -> str:
        streamed = "bands" if self.banded else "streamed rows"
        tiling = streamed if self.stream else ("whole images" if self.tile is None else f"{self.tile} px tiles")
        width = getattr(self.net, "width", None)
        return (
            f"Enhancer(gamma={self.gamma:g}, device={str(self.device)!r}, dtype={str(self.dtype).removeprefix('torch.')}, "
            f"{tiling}, conv={self.conv!r}, precision={self.precision!r}, "
            + (f"width={width})" if self.fast else f"net={type(self.net).__name__})")
        )

    @classmethod
    def from_pretrained(cls, gamma: float | None = None, **kwargs: Any) -> Enhancer:
        """An Enhancer with the authors' published weights, downloaded once into the cache and checked by SHA-256.

        The cache is `$PAIRLIE_WEIGHTS_DIR`, else `~/.cache/pairlie/weights`.

        Args:
            gamma: γ of the enhanced image; `None`: 0.2.
            **kwargs: The other arguments of [`Enhancer`][pairlie.Enhancer] (`device`, `tile`, ...).
        """
        return cls.from_checkpoint(official_weights(), gamma=gamma, **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, gamma: float | None = None, trust: str | list[str] | None = None, **kwargs: Any
    ) -> Enhancer:
        """An Enhancer from a pairlie `.ckpt` or the official `.pth`; `gamma` defaults to the checkpoint's.

        The file is read as data: a net of your own is rebuilt only when its module is in `trust`.

        Args:
            path: A checkpoint file, or `"official"` for the authors' published `PairLIE.pth`
                (see [`from_pretrained`][pairlie.Enhancer.from_pretrained]).
            gamma: γ of the enhanced image; `None`: the one saved in the checkpoint, else 0.2.
            trust: Modules of your own the checkpoint's net may import (`["my_nets"]`); `None`:
                pairlie's and `torch.nn`'s only.
            **kwargs: The other arguments of [`Enhancer`][pairlie.Enhancer] (`device`, `tile`, ...).
        """
        if is_official(path):
            path = official_weights()
        net, hparams = load_net(path, trust)
        if gamma is None:
            gamma = hparams.get("gamma", DEFAULT_GAMMA)
        return cls(net, gamma=gamma, **kwargs)

    @torch.no_grad()
    def decompose(self, image: Tensor) -> Decomposition:
        """L, R, X and the enhanced I of an N×3×H×W (or 3×H×W) float tensor in [0, 1], on the CPU.

        Args:
            image: A float tensor N×3×H×W or 3×H×W in [0, 1], on any device.

        Returns:
            N×C×H×W float32 CPU tensors in [0, 1]: illumination (C=1), reflectance, denoised and
                enhanced (C=3).
        """
        batch = image[None] if image.dim() == 3 else image
        channels = self.channels
        if batch.dim() != 4 or (channels is not None and batch.shape[1] != channels):
            c = channels or "C"
            raise ValueError(f"expected a {c}xHxW or Nx{c}xHxW image tensor, got shape {tuple(image.shape)}")
        height, width = batch.shape[-2:]
        # Reflection padding needs two pixels (a net may declare more: min_size); replicate thinner strips, then crop back.
        side = self.min_side
        pad = (0, max(0, side - width), 0, max(0, side - height))
        if any(pad):
            batch = F.pad(batch, pad, mode="replicate")
        # the Enhancer's own dtype, also inside an autocast region (a Lightning validation under 16-mixed)
        with torch.autocast(self.device.type, enabled=False):
            illumination, reflectance, denoised = self._decomposed(batch.float())
        crop = (..., slice(0, height), slice(0, width))
        illumination, reflectance, denoised = illumination[crop], reflectance[crop], denoised[crop]
        return Decomposition(illumination, reflectance, denoised, enhance(illumination, reflectance, self.gamma))

    def _decomposed(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.conv != "winograd":
            return self._tiled(batch)
        try:
            with winograd.sharing_cores():
                return self._tiled(batch)
        except RuntimeError as error:
            log.warning("Winograd convolution failed (%s); enhancing with direct convolutions from now on", error)
            self.conv = "direct"
            self.memory_format = torch.channels_last
            self.net = self.net.to(memory_format=self.memory_format)
            return self._tiled(batch)

    def _run(self, patch: Tensor, borders: streaming.Borders) -> tuple[Tensor, ...]:
        patch = to_device(patch, self.device, self.dtype).contiguous(memory_format=self.memory_format)
        if self.device.type == "cpu" and self.fast:
            outputs = streaming.forward(self.net, patch, borders, fast=self.conv == "winograd")
        else:
            return checked_outputs(self.net(patch), patch.shape)
        return tuple(t.float().cpu().contiguous() for t in outputs)

    def _tiled(self, batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.banded:
            return streaming.banded(self.net, batch, self.device, self.dtype, self.overlap, self.int8)
        if self.stream:
            return streaming.stream(self.net, batch, self.device, self.dtype, self.overlap, self.conv == "winograd")
        height, width = batch.shape[-2:]
        tile = self.tile
        if tile is None or (height <= tile + self.overlap and width <= tile + self.overlap):
            return self._run(batch, (True, True, True, True))
        return tile_forward(self._run, batch, tile, self.overlap, self.align)

    def enhance(self, image: Image.Image | np.ndarray | Tensor) -> Image.Image | np.ndarray | Tensor:
        """The enhanced image, of the same kind as `image`.

        Args:
            image: A PIL image, a uint8 NumPy array H×W×3 (RGB), or a float tensor 3×H×W or N×3×H×W
                in [0, 1] on any device.

        Returns:
            For a PIL image, an RGB PIL image (an alpha channel is carried over unchanged: RGBA in,
                RGBA out); for a uint8 array, a uint8 H×W×3 array, quantised by truncation as the
                authors saved; for a float tensor, a float tensor of the same shape, dtype and device.
        """
        if isinstance(image, Image.Image):
            alpha = image.getchannel("A") if "A" in image.getbands() else None
            arr = np.asarray(image.convert("RGB"))
            out = Image.fromarray(quantize(self.decompose(to_tensor(arr)).enhanced[0]))
            if alpha is not None:
                out.putalpha(alpha)
            return out
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected a uint8 HxWx3 array, got {image.dtype} {image.shape}")
            return quantize(self.decompose(to_tensor(image)).enhanced[0])
        if isinstance(image, Tensor):
            if not image.is_floating_point():
                raise ValueError(f"expected a float tensor in [0, 1], got {image.dtype}")
            out = self.decompose(image).enhanced
            return (out[0] if image.dim() == 3 else out).to(image.device, image.dtype)
        raise TypeError(f"cannot enhance a {type(image).__name__}: give a PIL image, uint8 array or float tensor")
