"""One training run from a composed config: checks before a run folder exists, the fit, the end-of-run report.

What ``pairlie-train`` calls (`pairlie.cli.train` only wires it to Hydra); tests call it too.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from pairlie.errors import ConfigError, first_line, user_error
from pairlie.infer.precision import bf16_training_note
from pairlie.io.files import write_atomic
from pairlie.io.speed import apply_speed_settings
from pairlie.train.callbacks import FlatOutputWarning, ProgressLines, quiet_lightning
from pairlie.train.hparams import run_params
from pairlie.train.runs import (
    RESUME_FILE,
    WRITE_ERRORS,
    auto_resuming,
    check_classes,
    check_deterministic,
    check_resumable,
    check_same_run,
    check_schedule,
    check_val_fraction,
    check_writable,
    in_submitit_job,
    resolve_resume,
    resume_command,
    saved_schedule,
    schedule_line,
    summary_lines,
)
from pairlie.train.sweep import RESULT_FILE
from pairlie.trust import trust_argument, untrusted_modules

log = logging.getLogger("pairlie")


def instantiate_group(group: DictConfig | None) -> list:
    """Every entry of a callbacks/logger group that names a ``_target_``."""
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def check_parts(cfg: DictConfig) -> None:
    """Build the model and check the training set's class now: a ``_target_`` that does not import or fit its place
    is one line before Hydra makes a run folder."""
    import lightning.pytorch as pl

    from pairlie.specs import locate

    model_cls = locate(cfg.model.get("_target_"), "model")
    if not (isinstance(model_cls, type) and issubclass(model_cls, pl.LightningModule)):
        raise ConfigError(f"model._target_={cfg.model._target_}: not a LightningModule class")
    try:
        model = instantiate(cfg.model)
    except Exception as exc:
        err = user_error(exc)
        if err is not None:
            raise ConfigError(str(err)) from None
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ConfigError(f"model: {cfg.model._target_} could not be built ({first_line(cause)})") from None
    train_set = cfg.data.get("train_set") if cfg.get("data") is not None else None
    if train_set is not None and train_set.get("_target_"):
        locate(train_set._target_, "data.train_set")
    check_classes(cfg)
    check_schedule(cfg)
    if hasattr(model, "check_before_fit"):  # loss terms on a probe step, a schedule that follows the run's length
        model.check_before_fit(cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps"))


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model described by ``cfg``; returns the final validation metrics."""
    apply_speed_settings(cfg)
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)
    resume = resolve_resume(cfg, output_dir)
    if resume is not None and resume.parent.parent.resolve() == output_dir.resolve():  # the run in its own folder
        check_same_run(cfg, output_dir)
    if resume is not None and not cfg.get("ckpt_path") and auto_resuming(cfg):
        schedule = saved_schedule(cfg, output_dir, list(HydraConfig.get().overrides.task))
        if schedule:
            log.info("auto_resume: the run's own schedule from its config.yaml: %s", schedule)
            with open_dict(cfg):
                for key, value in schedule.items():
                    OmegaConf.update(cfg, key, value)
    if resume is not None:
        check_resumable(resume, cfg)
    check_deterministic(cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    if hasattr(model, "run_params"):
        model.run_params = run_params(cfg)
    # Check and load every file now, so bad data stops the run before the trainer starts.
    datamodule.prepare_data()
    datamodule.setup("fit")
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    log.info(schedule_line(cfg, len(datamodule.train_set.scenes), choices.get("data")))
    if datamodule.val_set is None and cfg.get("callbacks") and cfg.callbacks.get("model_checkpoint"):
        log.warning("data.val_dir is not set: no validation, no best checkpoint; keeping last.ckpt")
        with open_dict(cfg):
            cfg.callbacks.model_checkpoint = None

    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks")) + [FlatOutputWarning()]
    if not loggers:  # Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_args = {}
    if not sys.stdout.isatty():  # a bar draws nothing into a file or a cluster log: progress as lines instead
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)] + [ProgressLines()]
        trainer_args["enable_progress_bar"] = False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **trainer_args)
    if in_submitit_job() and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        # strategy=ddp would re-run the submitit entry point with Hydra's arguments, which it rejects
        log.warning("trainer.strategy=ddp inside a submitit job that runs one task: using ddp_spawn for its ranks")
        trainer = instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, strategy="ddp_spawn", **trainer_args
        )
    slow_bf16 = bf16_training_note(trainer.precision)  # None on a CPU with native bf16 (pairlie.infer.precision)
    if isinstance(trainer.accelerator, CPUAccelerator) and slow_bf16:
        log.warning(slow_bf16)
    if datamodule.val_set is not None and len(datamodule.val_set) < trainer.world_size:
        raise ConfigError(
            f"data.val_dir has {len(datamodule.val_set)} validation image(s) for {trainer.world_size} processes; "
            "each process scores at least one: raise data.val_limit or use fewer trainer.devices"
        )
    check_val_fraction(cfg.trainer.get("limit_val_batches"), datamodule, trainer.world_size)
    global_batch = cfg.data.batch_size * trainer.world_size
    if cfg.get("scale_lr"):
        # linear scaling rule, relative to the published batch of 1
        model.hparams.optimizer["lr"] = cfg.model.optimizer.lr * global_batch
    if trainer.world_size > 1 or cfg.get("scale_lr"):
        log.info(
            "%d process(es): global batch %d, learning rate %g%s",
            trainer.world_size,
            global_batch,
            model.hparams.optimizer["lr"],
            " (scale_lr)" if cfg.get("scale_lr") else "",
        )
    if trainer.is_global_zero:  # ranks started by torchrun/srun share the folder: one writer
        write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        write_atomic(output_dir / RESUME_FILE, resume_command(output_dir, overrides) + "\n")
    log.info("run folder: %s", output_dir)
    try:
        # weights_only: a resumed checkpoint is read as data, as checkpoint_progress already did
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        last = output_dir / "checkpoints" / "last.ckpt"
        kept = f"; the previous checkpoint {last} is intact" if last.is_file() else ""
        raise ConfigError(
            f"cannot write {exc.filename or output_dir}: {exc.strerror}{kept}; free space (or choose another "
            "hydra.run.dir) and resume with ckpt_path=last"
        ) from None

    if datamodule.val_set is not None and "val/psnr" not in trainer.callback_metrics:
        # stopped by max_steps before an epoch ended: score the final weights anyway
        trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero:
        val_count = len(datamodule.val_set) if datamodule.val_set is not None else 0
        report(trainer, metrics, output_dir, val_count, cfg.data.get("test_dir") or cfg.data.get("val_dir"), cfg)
    return metrics


def report(
    trainer: L.Trainer, metrics: dict[str, float], output_dir: Path, val_count: int, test_dir, cfg: DictConfig
) -> None:
    """Rank 0: write val_metrics.json (read by sweep summaries); print and log the end-of-run block."""
    write_atomic(output_dir / RESULT_FILE, json.dumps(metrics, indent=2) + "\n")
    callback = trainer.checkpoint_callback
    checkpoint = (callback.best_model_path or callback.last_model_path) if callback is not None else None
    demo_dir = OmegaConf.select(cfg, "paths.demo_dir", default=None)
    # a net of one's own: the commands that load its checkpoint trust its module (pairlie.trust)
    trust = trust_argument(untrusted_modules({"net": trainer.lightning_module.hparams.get("net")}))
    lines = summary_lines(metrics, output_dir, val_count, checkpoint, test_dir, demo_dir, trust)
    print("\n".join(lines), flush=True)
    # into train.log too, but not a second time onto the terminal
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            for line in lines[1:]:
                handler.handle(logging.LogRecord("pairlie", logging.INFO, __file__, 0, line.strip(), None, None))
