"""The LightningModule: PairLIE's nets, weighted Retinex losses, paper-protocol validation, image logging."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from pairlie.errors import ConfigError, DataError, TrainingDiverged, first_line
from pairlie.evaluate.collapse import is_flat
from pairlie.evaluate.metrics import paper_scores
from pairlie.infer import winograd
from pairlie.infer.enhancer import Enhancer
from pairlie.infer.precision import PRECISIONS
from pairlie.infer.receptive import alignment, min_size
from pairlie.model.checkpoints import MAX_GAMMA, read_module
from pairlie.model.losses import Step, build_terms, probe_terms, weighted_terms
from pairlie.specs import DEFAULT_NET, build_module, build_part, describe, plain_spec
from pairlie.train.hparams import differing

HP_PSNR, HP_SSIM = "hp/val_psnr", "hp/val_ssim"
# the published optimiser and schedule (Adam 1e-4, lr halved every 100 epochs); configs/model/pairlie.yaml states the same
DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.Adam",
    "_partial_": True,
    "lr": 1e-4,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
}
DEFAULT_SCHEDULER = {
    "_target_": "torch.optim.lr_scheduler.StepLR",
    "_partial_": True,
    "step_size": 100,
    "gamma": 0.5,
    "interval": "epoch",
}
# model.scheduler.interval: when Lightning steps the scheduler (after each optimiser step, or each epoch)
INTERVALS = ("step", "epoch")
# a scheduler's length arguments (CosineAnnealingLR, OneCycleLR, LinearLR/PolynomialLR/ConstantLR): null
# follows the run's length in the scheduler's interval, filled when the optimiser is configured
LENGTH_KEYS = ("T_max", "total_steps", "total_iters")
# torch.compile modes for model.compile ("reduce-overhead" adds CUDA graphs on a GPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _part(given: Mapping | None, default: dict, key: str) -> dict:
    """An optimiser or scheduler spec: ``given`` whole when it names a ``_target_``, else its keys over the default's."""
    given = plain_spec(dict(given or {}))
    if "_target_" in given:
        return {"_partial_": True, **given}
    if "factor" in given and "gamma" in default:  # the StepLR key's name before schedulers were specs (old checkpoints)
        given["gamma"] = given.pop("factor")
    unknown = set(given) - set(default)
    if unknown:
        raise ConfigError(
            f"{key}: unknown key(s) {sorted(unknown)} for {default['_target_']}; accepted: "
            f"{sorted(k for k in default if not k.startswith('_'))} (or give your own {key}._target_)"
        )
    return {**default, **given}


def _instantiate(spec: dict, key: str, *args, trust: tuple[str, ...] | None = None):
    """``spec`` (a ``_partial_`` optimiser or scheduler spec) called with ``args``; one-line ConfigError otherwise.

    Built by :func:`pairlie.specs.build_part`, not Hydra: a spec's values stay values.
    """
    kind = key.rsplit(".", 1)[-1]
    lr_scheduler = torch.optim.lr_scheduler
    base = torch.optim.Optimizer if kind == "optimizer" else (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
    try:
        return build_part(spec, key, kind, base, *args, trust=trust)
    except ConfigError:
        raise
    except Exception as exc:  # a wrong argument for the class
        group = key.replace(".", "/")
        raise ConfigError(
            f"{key}: {spec['_target_']} could not be built ({first_line(exc)}); another class takes its own keys: "
            f"choose it with {group}=NAME (a file {group}/NAME.yaml, ours or in your --config-dir)"
        ) from None


def scheduler_interval(spec: Mapping) -> str:
    """``spec``'s ``interval`` (``epoch`` where it has none, as the published StepLR); one line when it is neither."""
    interval = spec.get("interval", "epoch")
    if interval not in INTERVALS:
        raise ConfigError(
            f"model.scheduler.interval={interval!r}: must be step or epoch (the learning rate moves after every "
            "optimiser step, or after every epoch)"
        )
    return interval


def open_lengths(spec: Mapping) -> list[str]:
    """The length arguments ``spec`` sets to null, which follow the run's length (none where OneCycleLR has ``epochs``)."""
    if spec.get("epochs") is not None:  # OneCycleLR counts epochs x steps_per_epoch itself
        return []
    return [key for key in LENGTH_KEYS if key in spec and spec[key] is None]


def check_run_length(spec: Mapping | None, max_epochs: int | None, max_steps: int | None) -> None:
    """A scheduler whose length follows the run needs a run with an end in its interval: one line otherwise.

    ``max_epochs``/``max_steps`` as the trainer config gives them (None or -1: no limit; Lightning
    trains 1000 epochs when neither is set).
    """
    if not spec or not open_lengths(spec):
        return
    interval = scheduler_interval(spec)
    no_steps = max_steps is None or max_steps == -1
    if max_epochs is None:
        max_epochs = 1000 if no_steps else -1  # Lightning's own default
    key = f"model.scheduler.{open_lengths(spec)[0]}=null"
    if interval == "epoch" and max_epochs == -1:
        raise ConfigError(
            f"{key} follows the run's length in epochs (model.scheduler.interval=epoch), and trainer.max_epochs sets "
            "no limit: set trainer.max_epochs, use model.scheduler.interval=step, or give the length"
        )
    if max_epochs == -1 and no_steps:
        raise ConfigError(
            f"{key} follows the run's length, and the run has none: set trainer.max_steps or trainer.max_epochs, "
            "or give the length"
        )


@functools.cache
def default_hparams() -> dict[str, Any]:
    """The hyper-parameters of ``PairLIEModule()``: what HParams compares a module built in Python against."""
    return dict(PairLIEModule().hparams)


def nonfinite(tensors: list[Tensor]) -> Tensor:
    """A boolean tensor on the tensors' device: True when any element is NaN or infinite.

    One fused max-abs reduction per tensor list and no host synchronisation; unlike a 2-norm, a
    max-abs cannot overflow on large finite values.
    """
    if not tensors:
        return torch.zeros((), dtype=torch.bool)
    return ~torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf")))).all()


class PairLIEModule(L.LightningModule):
    """Trains N, L and R on exposure pairs; validates the enhanced ``L**gamma * R`` against references."""

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
        """``net``: a spec (``{"_target_": ..., ...}``, the paper's nets at ``width`` by default) or a module.

        ``loss``: the weighted terms (:func:`pairlie.model.losses.build_terms`). ``optimizer``/``scheduler``:
        ``_partial_`` specs called with the parameters / the optimiser (Adam 1e-4 and StepLR halving
        every 100 epochs by default); keys without a ``_target_`` adjust the default's.
        """
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

    @property
    def flops_per_batch(self) -> int:
        """FLOPs of the latest batch: Lightning's ThroughputMonitor logs ``device/flops_per_sec`` (and MFU on known GPUs)."""
        return self._batch_flops

    def on_train_epoch_start(self) -> None:
        self._train_peak_bytes = 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def on_validation_start(self) -> None:
        # validation's full images would otherwise set the training peak: keep training's so far
        if self.device.type == "cuda":
            self._train_peak_bytes = max(self._train_peak_bytes, torch.cuda.max_memory_allocated(self.device))

    def on_train_epoch_end(self) -> None:
        if self.device.type == "cuda":
            peak = max(self._train_peak_bytes, torch.cuda.max_memory_allocated(self.device))
            # the largest rank's peak: the one that decides whether a batch size fits
            self.log("perf/gpu_max_memory_gb", peak / 2**30, sync_dist=True, reduce_fx="max")

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

    def on_before_optimizer_step(self, optimizer) -> None:
        """Skip a step with a non-finite loss or gradient; with a GradScaler, leave overflowing gradients to it."""
        params = [p for p in self.parameters() if p.grad is not None]
        device = params[0].device if params else self.device
        loss_bad = torch.zeros((), dtype=torch.bool, device=device) if self._loss_finite is None else ~self._loss_finite
        self._loss_finite = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # ranks agree on whether a loss was non-finite anywhere (the gradients already agree after DDP's all-reduce)
            loss_bad = loss_bad.to(torch.float32)
            dist.all_reduce(loss_bad, op=dist.ReduceOp.MAX)
            loss_bad = loss_bad > 0
        flags = torch.stack([loss_bad, nonfinite([p.grad for p in params]).to(device)])
        loss_bad, grads_bad = flags.tolist()  # the step's one host-device synchronisation
        scaler = self._grad_scaler()
        if scaler is not None and grads_bad and not loss_bad and scaler.get_scale() > 1:
            # The scaler skips this step and lowers its scale: its warm-up (65536 down to what the
            # gradients fit) is not divergence. At a scale of 1 or below the scaling no longer explains
            # the overflow, so those steps count.
            return
        if loss_bad or grads_bad:
            for p in params:
                p.grad = None  # Adam leaves parameters without gradients (and their moments) untouched
            self._skip_step("loss" if loss_bad else "gradient")
        else:
            self.nonfinite_in_a_row = 0

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """The precision plugin's GradScaler (16-mixed), or None (32-true, bf16-mixed, outside a Trainer)."""
        trainer = self._trainer
        return getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None

    def _skip_step(self, what: str) -> None:
        """Count a step with a non-finite loss or gradient; stop after ``nonfinite_patience`` in a row."""
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total), on_step=True, on_epoch=False)
        patience = self.hparams.nonfinite_patience
        if self.nonfinite_in_a_row >= patience:
            raise TrainingDiverged(
                f"training diverged: {self.nonfinite_in_a_row} steps in a row with a non-finite {what} "
                f"(model.nonfinite_patience={patience}, step {self.global_step}); the last good checkpoint is kept "
                "in the run's checkpoints/; lower model.optimizer.lr or resume with ckpt_path=last"
            )

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
            spec.update(dict.fromkeys(lengths, self._run_length(spec)))
        spec.pop("interval", None)  # Lightning's to apply, not the scheduler's argument
        scheduler = _instantiate(spec, "model.scheduler", optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def _run_length(self, spec: dict) -> int:
        """The run's length in ``interval``s: optimiser steps as Lightning estimates them, or epochs.

        Lightning's estimate counts trainer.max_steps, limit_train_batches, accumulate_grad_batches
        and the processes; epochs are those steps over the optimiser steps of one epoch (max_steps can
        end a run before max_epochs does).
        """
        trainer = self.trainer
        check_run_length(spec, trainer.max_epochs, trainer.max_steps)
        steps = trainer.estimated_stepping_batches
        if scheduler_interval(spec) == "step":
            if not 0 < steps < float("inf"):
                raise ConfigError(
                    f"model.scheduler.{open_lengths(spec)[0]}=null: the run's length in steps is unknown (a training "
                    "set without a length): set trainer.max_steps, or give the length"
                )
            return int(steps)
        batches = trainer.num_training_batches
        if not 0 < batches < float("inf") or not steps < float("inf"):  # an iterable training set: max_epochs
            return max(trainer.max_epochs, 1)
        return max(math.ceil(steps / math.ceil(batches / trainer.accumulate_grad_batches)), 1)
