"""The optimiser and the learning-rate schedule from their specs: the paper's defaults, intervals, lengths that follow the run."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pairlie.errors import ConfigError, first_line
from pairlie.specs import build_part, plain_spec

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

    Built by `pairlie.specs.build_part`, not Hydra: a spec's values stay values.
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


def run_length(trainer, spec: dict) -> int:
    """The run's length in ``interval``s: optimiser steps as Lightning estimates them, or epochs.

    Lightning's estimate counts trainer.max_steps, limit_train_batches, accumulate_grad_batches
    and the processes; epochs are those steps over the optimiser steps of one epoch (max_steps can
    end a run before max_epochs does).
    """
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
