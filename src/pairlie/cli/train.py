"""``pairlie-train``: fit PairLIE on exposure pairs (Hydra app; see configs/train.yaml)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf, open_dict

from pairlie.cli.common import CONFIG_PATH, apply_speed_settings, log, run_cli, run_reporting_errors
from pairlie.cli.preflight import CliSpec
from pairlie.errors import ConfigError
from pairlie.files import write_atomic
from pairlie.sweep import RESULT_FILE

# Lightning 2.6 tests isinstance(..., LeafSpec), which torch 2.10+ deprecates: nothing a user can act on
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)


def instantiate_group(group: DictConfig | None) -> list:
    """Every entry of a callbacks/logger group that names a ``_target_``."""
    return [instantiate(c) for c in (group or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


# a full disk, a quota, a read-only or forbidden folder: the user's to fix, not a bug
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def resolve_resume(cfg: DictConfig, output_dir: Path) -> Path | None:
    """The checkpoint to resume from; refuses to start a fresh run over an earlier run's checkpoints."""
    ckpt_dir = output_dir / "checkpoints"
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        path = ckpt_dir / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last: no {path}; set hydra.run.dir to the folder of the run to resume, or give ckpt_path=FILE"
            )
        return path
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"ckpt_path={path}: no such file; give a pairlie .ckpt to resume, or ckpt_path=last")
        return path
    last = ckpt_dir / "last.ckpt"
    if last.is_file() and (cfg.get("auto_resume") or os.environ.get("SLURM_RESTART_COUNT")):
        log.info("auto_resume: continuing from %s", last)
        return last
    if ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")) and not cfg.get("overwrite"):
        raise ConfigError(
            f"hydra.run.dir={output_dir}: already holds a run's checkpoints; resume it with ckpt_path=last, "
            "choose another hydra.run.dir, or pass overwrite=true"
        )
    return None


def check_resumable(path: Path, cfg: DictConfig) -> None:
    """Say in one line when a checkpoint is already past this run's end (Lightning would raise deep inside fit)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({type(exc).__name__})") from None
    epoch, step = saved.get("epoch", 0), saved.get("global_step", 0)
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps")
    if (max_epochs is not None and max_epochs >= 0 and epoch >= max_epochs) or (max_steps and 0 < max_steps <= step):
        raise ConfigError(
            f"ckpt_path={path}: the checkpoint is at epoch {epoch}, step {step}, already past trainer.max_epochs="
            f"{max_epochs} / trainer.max_steps={max_steps}; resume with the original run's overrides or raise them"
        )


def check_writable(folder: Path) -> None:
    """Fail before training, not at the first checkpoint, when the run folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"hydra.run.dir={folder}: cannot write here ({exc.strerror}); choose a writable hydra.run.dir or paths.log_dir"
        ) from None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model described by ``cfg``; returns the final validation metrics."""
    apply_speed_settings(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)
    resume = resolve_resume(cfg, output_dir)
    if resume is not None:
        check_resumable(resume, cfg)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    # Check and load every file now, so bad data stops the run before the trainer starts.
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.val_set is None and cfg.get("callbacks") and cfg.callbacks.get("model_checkpoint"):
        log.warning("data.val_dir is not set: no validation, no best checkpoint; keeping last.ckpt")
        with open_dict(cfg):
            cfg.callbacks.model_checkpoint = None

    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    if isinstance(trainer.accelerator, CPUAccelerator) and "bf16" in str(trainer.precision):
        log.warning(
            "trainer.precision=%s on a CPU: without native bf16 this runs ~50x slower than 32-true", trainer.precision
        )
    if datamodule.val_set is not None and len(datamodule.val_set) < trainer.world_size:
        raise ConfigError(
            f"data.val_dir has {len(datamodule.val_set)} validation image(s) for {trainer.world_size} processes; "
            "each process scores at least one: raise data.val_limit or use fewer trainer.devices"
        )
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
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    log.info("run folder: %s", output_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
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
        report(trainer, metrics, output_dir, len(datamodule.val_set) if datamodule.val_set is not None else 0)
    return metrics


def report(trainer: L.Trainer, metrics: dict[str, float], output_dir: Path, val_count: int) -> None:
    """Rank 0: write val_metrics.json (read by sweep summaries) and print the scores and checkpoint."""
    write_atomic(output_dir / RESULT_FILE, json.dumps(metrics, indent=2) + "\n")
    if "val/psnr" in metrics:
        print(
            f"validation ({val_count} images): "
            f"input {metrics['val/input_psnr']:.2f} dB / SSIM {metrics['val/input_ssim']:.4f}  ->  "
            f"enhanced {metrics['val/psnr']:.2f} dB / SSIM {metrics['val/ssim']:.4f}"
        )
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and (checkpoint.best_model_path or checkpoint.last_model_path):
        print(f"checkpoint: {checkpoint.best_model_path or checkpoint.last_model_path}")


SPEC = CliSpec(
    name="pairlie-train",
    config_name="train",
    summary="train PairLIE on pairs of differently exposed low-light shots (Lightning + Hydra).",
    usage="pairlie-train [-m] [experiment=sice|lol|demo] [data.train_dir=DIR data.val_dir=DIR] [key=value ...]",
    examples=[
        "pairlie-train                                   # the embedded demo set, ~minutes on a CPU",
        "pairlie-train experiment=sice paths.data_dir=/data trainer=gpu",
        "pairlie-train -m model.loss.fidelity=100,500,1000   # a sweep, one run folder per value",
    ],
    groups=["experiment", "data", "trainer", "logger", "callbacks", "hparams_search", "debug"],
    key_files=[("train.yaml", ""), ("model/pairlie.yaml", "model."), ("data/default.yaml", "data.")],
    extra_keys=[
        "trainer.*                          any Lightning Trainer argument: max_epochs, devices, precision, ..."
    ],
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app; returns the validation PSNR for Hydra sweepers."""
    metrics = run_reporting_errors(train, cfg)
    return metrics.get("val/psnr")


def main() -> None:
    """Entry point of ``pairlie-train``."""
    run_cli(SPEC, hydra_main)


if __name__ == "__main__":
    main()
