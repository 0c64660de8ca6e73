"""Lightning callbacks of pairlie's own: a checkpoint on pre-emption, a whole-run progress bar, a quiet summary, a warning on flat outputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from rich import get_console
from rich.table import Table

from pairlie.evaluate.collapse import FLAT_METRIC, flat_note
from pairlie.train.runs import RESUME_FILE

log = logging.getLogger("pairlie")


class SaveOnInterrupt(L.Callback):
    """On SIGTERM (pre-emption), Ctrl-C or a cluster time-out, write ``last.ckpt`` and say how to resume.

    Lightning turns SIGTERM into a clean stop at the next batch; this callback adds the checkpoint.
    submitit (``hydra/launcher=slurm``) owns the time-out signal: on rank 0 it requeues the job and
    raises ``SystemExit`` wherever training is, which reaches this hook too. The requeued job
    resumes from the run folder's ``last.ckpt`` (``SLURM_RESTART_COUNT`` turns on ``auto_resume``).
    Lightning writes checkpoints through a temporary file and a rename, so a kill during the write
    leaves the previous ``last.ckpt`` whole.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            kind = "Ctrl-C"
        elif isinstance(exception, SIGTERMException):
            kind = "SIGTERM"
        elif isinstance(exception, SystemExit):
            kind = "a job time-out or pre-emption (SystemExit)"
        else:
            return  # a failing run keeps its last good checkpoint rather than its failed state
        if isinstance(exception, SystemExit) and trainer.world_size > 1:
            # only rank 0 exits (submitit lets the other ranks run on): no barrier, which would wait forever
            if trainer.is_global_zero:
                checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.path)
        else:
            trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            run_dir = self.path.parent.parent
            command = run_dir / RESUME_FILE  # written when the run started, with its overrides
            how = (
                command.read_text().strip()
                if command.is_file()
                else f"pairlie-train hydra.run.dir={run_dir} ckpt_path=last (and the same overrides)"
            )
            message = f"interrupted by {kind} at step {trainer.global_step}: saved {self.path}; resume with: {how}"
            print(f"\n{message.replace('; resume with', chr(10) + 'resume with')}", flush=True)
            to_log_files(message)  # the run's train.log too (nohup, cluster logs), not the console twice


def to_log_files(message: str) -> None:
    """Write ``message`` as an INFO record of the ``pairlie`` logger to the log files only (the run's ``train.log``)."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, None, None)
    for handler in (*log.handlers, *logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def pairs_in_batch(batch) -> int:
    """Samples in a batch for Lightning's ThroughputMonitor: exposure pairs in training, images in validation."""
    return int(batch["low"].shape[0] if isinstance(batch, dict) else batch[0].shape[0])


class RunProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 of N and showing the whole run's progress and time left."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._run_start: tuple[float, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._run_start = (time.monotonic(), trainer.global_step)

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        description = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
        return f"{description:{len(self.validation_description)}}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        total, left = run_steps(trainer), time_left(trainer, self._run_start or (time.monotonic(), 0))
        if total and left is not None:
            items["run"] = f"{100 * trainer.global_step / total:.0f}% ~{_clock(left)} left"
        return items


class ProgressLines(L.Callback):
    """Progress as log lines, for output that is not a terminal (a file, ``nohup``, a cluster job's log).

    A rich progress bar draws nothing there until the run ends. Every ``every_s`` seconds and at each
    epoch's end, rank 0 logs epoch, step, loss, pairs per second and time left (to the terminal and the run's train.log).
    """

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._start: tuple[float, int] = (time.monotonic(), 0)
        self._last = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.monotonic(), trainer.global_step)
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self._report(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        self._last = time.monotonic()
        if not trainer.is_global_zero:
            return
        total, left, step = run_steps(trainer), time_left(trainer, self._start), trainer.global_step
        parts = [
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
            f"step {step}" + (f"/{total}" if total else ""),
        ]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4g}")
        rate = pairs_per_second(trainer, self._start)
        if rate is not None:
            parts.append(f"{rate:.3g} pairs/s")
        if left is not None:
            parts.append(f"~{_clock(left)} left")
        logging.getLogger("pairlie").info("progress: %s", ", ".join(parts))


def pairs_per_second(trainer: L.Trainer, start: tuple[float, int]) -> float | None:
    """Exposure pairs trained per second, all processes together, since ``start`` (time, step); None before a step."""
    seconds, steps = time.monotonic() - start[0], trainer.global_step - start[1]
    hparams = getattr(getattr(trainer, "datamodule", None), "hparams", {})
    batch = hparams.get("batch_size") if hasattr(hparams, "get") else None
    if steps <= 0 or seconds <= 0 or not isinstance(batch, int):
        return None
    return steps * batch * trainer.world_size / seconds


def run_steps(trainer: L.Trainer) -> int | None:
    """Optimiser steps the whole run will take: the smaller of max_steps and max_epochs x batches per epoch."""
    per_epoch = trainer.num_training_batches
    limits = []
    if trainer.max_steps and trainer.max_steps > 0:
        limits.append(trainer.max_steps)
    if trainer.max_epochs and trainer.max_epochs > 0 and per_epoch not in (None, float("inf")):
        limits.append(int(trainer.max_epochs * per_epoch / trainer.accumulate_grad_batches))
    return min(limits) if limits else None


def time_left(trainer: L.Trainer, start: tuple[float, int]) -> float | None:
    """Seconds the run still needs at the pace since ``start`` = (monotonic time, global step); None before a step."""
    total, (started, first_step) = run_steps(trainer), start
    done = trainer.global_step - first_step
    if not total or done <= 0:
        return None
    return (time.monotonic() - started) / done * max(0, total - trainer.global_step)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without the metric modules and the FLOPs column (0 without an example input)."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs
    ):
        columns = dict(summary_data)
        keep = [i for i, name in enumerate(columns["Name"]) if not name.startswith("val_means")]
        table = Table(header_style=kwargs.get("header_style", "bold magenta"))
        shown = [c for c in ("Name", "Type", "Params", "Mode") if c in columns]
        for column in shown:
            table.add_column(column, justify="right" if column == "Params" else "left")
        for i in keep:
            table.add_row(*(columns[c][i] for c in shown))
        console = get_console()
        console.print(table)
        console.print(
            f"Trainable params: {get_human_readable_count(int(trainable_parameters))}, "
            f"total: {get_human_readable_count(int(total_parameters))} ({model_size:.2f} MB)"
        )


class _Quiet(logging.Filter):
    """Drops Lightning's advertisements and device lines that say nothing on this machine."""

    NOISE = (
        "💡 Tip",
        "GPU available: False",
        "TPU available: False",
        "HPU available: False",
        "Trainer already configured with model summary",
        "Seed set to",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_lightning() -> None:
    """Install `_Quiet` on the loggers Lightning announces through."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Quiet) for f in logger.filters):
            logger.addFilter(_Quiet())


class FlatOutputWarning(L.Callback):
    """Warns in the log, after each validation, when at least half of its enhanced images were flat."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        fraction = trainer.callback_metrics.get(FLAT_METRIC)
        note = flat_note({FLAT_METRIC: float(fraction)}) if fraction is not None else None
        if note:
            log.warning("step %d: %s", trainer.global_step, note)
