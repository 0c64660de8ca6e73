"""The LightningModule: PairLIE's nets, weighted Retinex losses, paper-protocol validation, image logging."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from pairlie.errors import ConfigError, DataError
from pairlie.evaluate.collapse import is_flat
from pairlie.evaluate.metrics import paper_scores
from pairlie.infer import winograd
from pairlie.infer.enhancer import Enhancer
from pairlie.infer.precision import PRECISIONS
from pairlie.infer.receptive import alignment, min_size
from pairlie.model.checkpoints import MAX_GAMMA, read_module
from pairlie.model.losses import Step, build_terms, probe_terms, weighted_terms
from pairlie.specs import DEFAULT_NET, build_module, describe, plain_spec
from pairlie.train.accounting import Accounting
from pairlie.train.hparams import differing
from pairlie.train.nonfinite import SkipsNonFiniteSteps, nonfinite  # noqa: F401  (nonfinite: also read from here)
from pairlie.train.optim import (  # noqa: F401  (the defaults: also read from here)
    COMPILE_MODES,
    DEFAULT_OPTIMIZER,
    DEFAULT_SCHEDULER,
    INTERVALS,
    _instantiate,
    _part,
    check_run_length,
    open_lengths,
    run_length,
    scheduler_interval,
)

HP_PSNR, HP_SSIM = "hp/val_psnr", "hp/val_ssim"


@functools.cache
def default_hparams() -> dict[str, Any]:
    """The hyper-parameters of ``PairLIEModule()``: what HParams compares a module built in Python against."""
    return dict(PairLIEModule().hparams)


class PairLIEModule(SkipsNonFiniteSteps, Accounting, L.LightningModule):
    """Trains N, L and R on exposure pairs; validates the enhanced `L**gamma * R` against references.

    `pairlie-train` builds it from the `model.*` keys. Every part is a spec, a mapping with a
    `_target_`, which its checkpoints keep.

    Args:
        net: A spec (`{"_target_": "pkg.Class", ...}`) or a module; `None`: the paper's
            [`PairLIENet`][pairlie.model.nets.PairLIENet] at `width`.
        width: Channels of every hidden layer of the paper's N, L and R (64 in the paper).
        gamma: γ of the enhanced image validation scores, in (0, 10] (0.14 for LOL, 0.2 for SICE).
        loss: The weighted terms, `name: weight` or `name: {_target_: module.function, weight: w, ...}`
            ([`build_terms`][pairlie.model.losses.build_terms]); `None`: the paper's consistency,
            retinex and fidelity at 1, 1 and 500.
        optimizer: A `_partial_` spec called with the parameters; keys without a `_target_` adjust
            the default, Adam with lr 1e-4.
        scheduler: A `_partial_` spec called with the optimiser, plus `interval` (`"epoch"` or
            `"step"`: when it steps); keys without a `_target_` adjust the default, StepLR halving
            the learning rate every 100 epochs; `False`: none.
        log_images: Validation images shown in TensorBoard as input|L|R|X|I.
        nonfinite_patience: Steps with a NaN/Inf loss or gradient are skipped; this many in a row
            stop the run.
        compile: `torch.compile` the training step's nets: `None` (off), `True` (`"default"`),
            `"reduce-overhead"` (CUDA graphs), `"max-autotune"` or `"max-autotune-no-cudagraphs"`.
        conv: Training convolutions: `"direct"`, `"winograd"` (forward and input gradient by
            Winograd, CPU fp32) or `"auto"` (Winograd where it measures faster).
        val_precision: Validation's inference: `"fp32"` (the paper's protocol), `"bf16"`, `"auto"`
            (bf16 where the CPU has it natively) or `"fp16"` (CUDA).
    """

    def __init__(
        self,
        net: Mapping[str, Any] | torch.nn.Module | None = None,
        width: int = 64,
        gamma: float = 0.2,
        loss: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        log_images: int = 3,
        nonfinite_patience: int = 10,
        compile: bool | str | None = None,
        conv: str = "direct",
        val_precision: str = "fp32",
    ) -> None:
        super().__init__()
        if compile is True:
            compile = "default"
        if compile not in (None, False, *COMPILE_MODES):
            raise ConfigError(f"model.compile={compile!r}: must be null (off), true or one of {list(COMPILE_MODES)}")
        if conv not in winograd.CONV_MODES:
            raise ConfigError(f"model.conv={conv!r}: must be direct, winograd or auto")
        if compile and conv == "winograd":
            raise ConfigError(
                "model.conv=winograd and model.compile: pick one (torch.compile runs direct convolutions)"
            )
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= MAX_GAMMA:
            raise ConfigError(
                f"model.gamma={gamma!r}: must be a number in (0, {MAX_GAMMA:g}] (0.2 for SICE, 0.14 for LOL)"
            )
        if val_precision not in PRECISIONS:
            raise ConfigError(f"model.val_precision={val_precision!r}: must be one of {', '.join(PRECISIONS)}")
        if val_precision == "int8":  # it needs calibration images, which validation has none of
            raise ConfigError(
                "model.val_precision=int8: validation runs fp32 or bf16; score int8 after training with "
                "pairlie-test precision=int8 calibration=DIR"
            )
        if not isinstance(width, int) or width < 1:
            raise ConfigError(f"model.width={width!r}: must be a positive integer (64 in the paper)")
        if net is None:
            net = {"_target_": DEFAULT_NET, "width": width}
        self.net = build_module(net if isinstance(net, torch.nn.Module) else plain_spec(net), "model.net")
        loss = plain_spec(dict(loss or {}))
        self.terms = build_terms(loss)
        optimizer = _part(optimizer, DEFAULT_OPTIMIZER, "model.optimizer")
        scheduler = None if scheduler is False else _part(scheduler, DEFAULT_SCHEDULER, "model.scheduler")
        if not isinstance(nonfinite_patience, int) or nonfinite_patience < 1:
            raise ConfigError(f"model.nonfinite_patience={nonfinite_patience!r}: must be a positive integer")
        lr = optimizer.get("lr")
        if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
            raise ConfigError(f"model.optimizer.lr={lr!r}: must be > 0")
        # both built once on a stand-in parameter, so a wrong target or argument stops the run before it starts
        probe = _instantiate(optimizer, "model.optimizer", [torch.nn.Parameter(torch.zeros(1))])
        if not isinstance(probe, torch.optim.Optimizer):
            raise ConfigError(f"model.optimizer._target_={optimizer['_target_']}: not a torch.optim.Optimizer")
        if scheduler is not None:
            scheduler_interval(scheduler)
            # a length that follows the run is not known before the trainer: 1 stands in for it here
            stand_in = {k: v for k, v in scheduler.items() if k != "interval"} | dict.fromkeys(
                open_lengths(scheduler), 1
            )
            _instantiate(stand_in, "model.scheduler", probe)
        self.save_hyperparameters(
            {
                "net": describe(self.net),
                "width": width,
                "gamma": float(gamma),
                "loss": loss,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "log_images": log_images,
                "nonfinite_patience": nonfinite_patience,
                "compile": compile or None,
                "conv": conv,
                "val_precision": val_precision,
            },
            logger=False,  # logged with the validation metrics in on_fit_start, for TensorBoard's HParams tab
        )
        self.val_means = torch.nn.ModuleDict({k: MeanMetric() for k in ("psnr", "ssim", "input_psnr", "input_ssim")})
        self.val_means["flat"] = MeanMetric()  # pairlie.evaluate.collapse: the fraction of flat outputs, val/flat
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        # FLOPs per pixel of a training step and of a validation forward: fixed by the nets (0 where unknown)
        flops = (getattr(self.net, "training_flops", None), getattr(self.net, "forward_flops", None))
        self._flops_per_pixel = tuple(f(1) if callable(f) else 0 for f in flops)
        self._batch_flops = 0
        self._loss_finite: Tensor | None = None  # of the steps since the last optimiser step, on the device
        self._step_nets: tuple | None = None  # N, L, R as the training step calls them (compiled or not)
        self._input_scores: dict[str, tuple[float, float]] = {}
        self._train_peak_bytes = 0  # CUDA memory peak of this epoch's training steps before a validation
        self._enhancer: Enhancer | None = None  # validation's copy of the net, made per validation run
        self.run_params: dict[str, Any] = {}  # pairlie-train's keys for HParams (pairlie.train.hparams.run_params)

    def check_before_fit(self, max_epochs: int | None, max_steps: int | None) -> None:
        """What can only fail once training starts, checked now: every loss term on a probe step, the schedule's length.

        ``max_epochs``/``max_steps``: the trainer's (None or -1: no limit). One ConfigError line naming
        the key; ``pairlie-train`` calls it before a run folder exists.
        """
        check_run_length(self.hparams.scheduler, max_epochs, max_steps)
        # 32 pixels, or the net's declared min_size, rounded up to its declared alignment (total stride)
        align = alignment(self.net)
        size = -(-max(32, min_size(self.net)) // align) * align
        probe_terms(self.terms, self.net, self.hparams.gamma, channels=getattr(self.net, "channels", 3), size=size)

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        trust: str | Iterable[str] | None = None,
        **kwargs: Any,
    ) -> PairLIEModule:
        """The module a ``pairlie-train`` checkpoint holds, read as data (Lightning's call, made safe).

        The file is read with ``torch.load(weights_only=True)``; its net, loss terms, optimiser and
        scheduler may name pairlie's and torch's classes only, or modules in ``trust``
        (``trust=["my_nets"]``), all checked before anything is imported. ``kwargs`` override the
        saved hyper-parameters, as in Lightning.
        """
        if hparams_file is not None:
            raise ConfigError("hparams_file: not supported; a pairlie checkpoint holds its hyper-parameters")
        hparams, state = read_module(checkpoint_path, trust)
        try:
            model = cls(**{**hparams, **kwargs})
        except TypeError as exc:
            raise DataError(
                f"ckpt_path={checkpoint_path}: its hyper-parameters do not fit {cls.__name__} ({exc})"
            ) from None
        model.load_state_dict(state, strict=True if strict is None else strict)
        return model if map_location is None else model.to(map_location)

    def on_fit_start(self) -> None:
        """Log the run's hyper-parameters with its validation metrics, so HParams compares a sweep's runs."""
        if self.hparams.get("compile") and self.device.type == "cpu":
            rank_zero_warn(
                "model.compile on a CPU: a compiled 128x128 step measured 1.8x slower than eager on a 2-core "
                "AVX2 machine, plus ~20 s of compiling; it is meant for GPUs"
            )
        self.step_nets()  # model.conv=winograd where it cannot run: refused before the first step
        logger = self.logger
        if not isinstance(logger, TensorBoardLogger):
            return
        # pairlie-train's keys that tell this run apart (pairlie.train.hparams), else the module's own that differ
        params = self.run_params or differing({"model": dict(self.hparams)}, {"model": default_hparams()})
        logger.log_hyperparams(params, metrics={HP_PSNR: float("nan"), HP_SSIM: float("nan")})

    def on_validation_end(self) -> None:
        metrics = self.trainer.callback_metrics
        if self.trainer.sanity_checking or "val/psnr" not in metrics or self.logger is None:
            return
        if self.trainer.is_global_zero:
            self.logger.log_metrics(
                {HP_PSNR: float(metrics["val/psnr"]), HP_SSIM: float(metrics["val/ssim"])}, step=self.global_step
            )

    def forward(self, im: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(illumination, reflectance, denoised)`` of a batch of images in [0, 1]."""
        return self.net(im)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        images = list(batch)  # two or more exposures of the same scenes
        im1 = images[0]
        pixels = im1.shape[0] * im1.shape[2] * im1.shape[3]
        self._batch_flops = pixels * self._flops_per_pixel[0]
        if self.hparams.get("compile") == "reduce-overhead":
            # a new step: CUDA-graph outputs of the last one may be overwritten (skipped steps break the
            # forward/backward rhythm torch's cudagraph trees infer steps from)
            torch.compiler.cudagraph_mark_step_begin()
        step = self._forward_step(images)
        # fp32 losses under autocast too: in fp16, X / L.detach() overflows (past 65504) where L is small
        with torch.autocast(self.device.type, enabled=False):
            terms = weighted_terms(step, self.terms)
        total = terms["total"]
        finite = torch.isfinite(total)
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        self.log("train/loss", total, prog_bar=True, batch_size=im1.shape[0])
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "total"}, batch_size=im1.shape[0])
        # A non-finite loss still goes through backward, multiplied by NaN so that every gradient is NaN:
        # returning None would need a host sync here, and under DDP every rank must join the gradient
        # all-reduce (Lightning refuses None there). on_before_optimizer_step then skips the step on
        # every rank together. A finite loss is multiplied by exactly 1.
        return total * torch.where(finite, 1.0, float("nan"))

    def _forward_step(self, images: list[Tensor]) -> Step:
        """The step's outputs: with N, L and R, as the published loop (L of the first exposure only, more on demand)."""
        autocast = torch.is_autocast_enabled(self.device.type)
        dtype = torch.get_autocast_dtype(self.device.type) if autocast else None
        parts = self.step_nets()
        if parts is None:  # a net of one's own: its forward gives L, R and X of each exposure
            outputs = [self.net(im) for im in images]
            step = Step(images, compute=None, gamma=self.hparams.gamma)
            for k, out in enumerate(outputs):
                for part, value in zip(("illumination", "reflectance", "denoised"), out, strict=True):
                    step.put(k, part, value)
            return step
        denoiser, illumination, reflectance = parts
        denoised: list[Tensor] = []  # as the nets gave them (Step keeps fp32 copies)

        def compute(k: int, part: str) -> Tensor:  # asked inside the losses' fp32 region: the nets' own precision
            with torch.autocast(self.device.type, dtype=dtype, enabled=autocast):
                return illumination(denoised[k])

        step = Step(images, compute=compute, gamma=self.hparams.gamma)
        for k, im in enumerate(images):
            denoised.append(denoiser(im))
            step.put(k, "denoised", denoised[k])
            if k == 0:
                step.put(0, "illumination", illumination(denoised[0]))
            step.put(k, "reflectance", reflectance(denoised[k]))
        return step

    def step_nets(self) -> tuple | None:
        """N, L and R for the training step: compiled with ``model.compile``, Winograd with ``model.conv``; None for a net without them.

        Only the training step is compiled: its crops have one size, while validation images vary.
        The wrappers are kept in a tuple, outside the module tree, so checkpoints keep their keys.
        Winograd runs only the parts that are the paper's ConvNets; any other part runs as it is.
        """
        if self._step_nets is None:
            parts = getattr(self.net, "parts", None)
            if not callable(parts):
                if self.hparams.get("conv") == "winograd":
                    raise ConfigError(
                        "model.conv=winograd: your net has no N, L and R parts it can run; use model.conv=direct"
                    )
                self._step_nets = ()  # a net of one's own: its forward runs as it is
                return None
            nets = parts()
            mode = self.hparams.get("compile")
            if mode:
                self._step_nets = tuple(torch.compile(net, mode=mode) for net in nets)
            elif winograd.resolve(self.hparams.get("conv", "direct"), self.device, "model.conv") == "winograd":
                self._step_nets = tuple(
                    functools.partial(winograd.run_net, net) if winograd.runs(net) else net for net in nets
                )
            else:
                self._step_nets = nets
        return self._step_nets or None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        low, high = batch["low"], batch["high"]
        self._batch_flops = low.shape[0] * low.shape[2] * low.shape[3] * self._flops_per_pixel[1]
        if self._enhancer is None:
            # pairlie-test's path: fp32 under any autocast, memory bounded by a band or tile on huge images
            self._enhancer = Enhancer(
                self.net,
                self.hparams.gamma,
                device=str(self.device),
                precision=self.hparams.get("val_precision", "fp32"),  # a checkpoint from before it: fp32
            )
        out = self._enhancer.decompose(low)
        illumination, reflectance, denoised, enhanced = out.illumination, out.reflectance, out.denoised, out.enhanced
        for i in range(low.shape[0]):
            ref = high[i].cpu().numpy()
            psnr, ssim = paper_scores(enhanced[i], ref)
            # the unenhanced input scores the same every epoch: compute them once per image
            name = batch["name"][i]
            if name not in self._input_scores:
                self._input_scores[name] = paper_scores(low[i], ref)
            input_psnr, input_ssim = self._input_scores[name]
            for key, value in (("psnr", psnr), ("ssim", ssim), ("input_psnr", input_psnr), ("input_ssim", input_ssim)):
                self.val_means[key].update(value)
            self.val_means["flat"].update(float(is_flat(enhanced[i])))  # a collapsed model (pairlie.evaluate.collapse)
        # MeanMetric keeps (sum, count) and syncs them across ranks: the mean of all images, even when
        # ranks hold different numbers of them.
        for key, metric in self.val_means.items():
            self.log(f"val/{key}", metric, batch_size=low.shape[0], prog_bar=key == "psnr")
        if batch_idx < self.hparams.log_images:
            self._log_grid(batch["name"][0], low[0].cpu(), illumination[0], reflectance[0], denoised[0], enhanced[0])

    def on_validation_epoch_end(self) -> None:
        self._enhancer = None  # the next validation copies the weights trained by then
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # training after validation starts from its own peak

    def _log_grid(self, name: str, *images: Tensor) -> None:
        """Input | L | R | X | I side by side, for TensorBoard."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image") or self.trainer.sanity_checking:
            return
        row = torch.cat([img.expand(3, -1, -1) for img in images], dim=-1).clamp(0, 1)
        experiment.add_image(f"val_images/{name} (input|L|R|X|I)", row, self.global_step)

    def configure_optimizers(self):
        optimizer = _instantiate(dict(self.hparams.optimizer), "model.optimizer", self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        spec = dict(self.hparams.scheduler)
        interval = scheduler_interval(spec)
        lengths = open_lengths(spec)
        if lengths:
            spec.update(dict.fromkeys(lengths, run_length(self.trainer, spec)))
        spec.pop("interval", None)  # Lightning's to apply, not the scheduler's argument
        scheduler = _instantiate(spec, "model.scheduler", optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
