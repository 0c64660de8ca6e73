"""Run folders: find the runs and checkpoints ``pairlie-train`` left, decide what a new run resumes or may overwrite, report it."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pairlie.errors import ConfigError, DataError
from pairlie.evaluate.collapse import flat_note
from pairlie.model.checkpoints import check_data, read_checkpoint
from pairlie.model.weights import is_official, official_weights
from pairlie.specs import locate

log = logging.getLogger("pairlie")

# a full disk, a quota, a read-only or forbidden folder: the user's to fix, not a bug
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# what an automatically resumed run takes from the run folder's config.yaml unless given on the command line
SCHEDULE_KEYS = ("trainer.max_epochs", "trainer.max_steps")
# what a run learns from: a resume in its folder must keep these as the run started with them
TRAINED_KEYS = (
    "data._target_",
    "data.train_dir",
    "data.pairing",
    "data.patch_size",
    "data.batch_size",
    "data.augment",
    "data.repeats",
    "data.train_set",
    "model._target_",
    "model.width",
    "model.net",
    "model.loss",
    "model.optimizer",
    "model.scheduler",
)
RESUME_FILE = "resume.txt"  # the command that resumes the run, written into its folder when it starts


def latest_checkpoint(log_dir: str | Path) -> Path:
    """The best checkpoint (else ``last.ckpt``) of the most recent ``pairlie-train`` run under ``log_dir``."""
    runs_root = Path(log_dir) / "train"
    # runs/<time>/checkpoints and multiruns/<time>/<job>/checkpoints, newest first
    folders = [*runs_root.glob("*/*/checkpoints"), *runs_root.glob("*/*/*/checkpoints")]
    for folder in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
        best = sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
        if best:
            return best[-1]
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
    raise DataError(
        f"no ckpt_path given and no pairlie-train checkpoint under {runs_root}; "
        "pass ckpt_path=FILE (a pairlie .ckpt or the official PairLIE.pth)"
    )


def resolve_checkpoint(cfg: DictConfig) -> Path:
    """``cfg.ckpt_path`` (``official``: the authors' weights, downloaded once), else the latest ``pairlie-train`` checkpoint."""
    if cfg.get("ckpt_path"):
        if is_official(cfg.ckpt_path):
            return official_weights()
        return Path(cfg.ckpt_path).expanduser()
    path = latest_checkpoint(cfg.paths.log_dir)
    print(f"no ckpt_path given: using {path} (the latest pairlie-train run)")
    return path


def check_no_earlier_test(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write a test run's results over an earlier test run's, unless ``overwrite``."""
    if (out_dir / "metrics.json").exists() and not overwrite:
        raise ConfigError(
            f"hydra.run.dir={out_dir}: holds the results of an earlier test run; choose another folder or pass overwrite=true"
        )


def check_run_folder(cfg: DictConfig, multirun: bool = False) -> None:
    """The folder Hydra will make for this run (``hydra.run.dir``, or ``hydra.sweep.dir`` with ``-m``) can be made.

    Hydra makes it before pairlie runs, and a read-only disk or a path through a file would end
    there in a traceback: one line naming the folder instead.
    """
    multirun = multirun or OmegaConf.select(cfg, "hydra.mode", default=None) == "MULTIRUN"
    try:
        folder = OmegaConf.select(cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir", default=None)
    except Exception:  # an interpolation only Hydra's runtime resolves: Hydra's to report
        return
    if not folder or str(folder) == ".":
        return
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    path = Path(str(folder)).expanduser().absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise ConfigError(f"{key}={path}: {existing} is a file, not a folder; choose another {key} or paths.log_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}={path}: cannot write in {existing} (read-only or not yours); choose a writable {key} or paths.log_dir"
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


def auto_resuming(cfg: DictConfig) -> bool:
    """True when a run folder's ``last.ckpt`` is continued without ``ckpt_path``: ``auto_resume`` or a SLURM requeue."""
    return bool(cfg.get("auto_resume") or os.environ.get("SLURM_RESTART_COUNT"))


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
    if last.is_file() and auto_resuming(cfg):
        log.info("auto_resume: continuing from %s", last)
        return last
    if ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")) and not cfg.get("overwrite"):
        raise ConfigError(
            f"hydra.run.dir={output_dir}: already holds a run's checkpoints; resume it with ckpt_path=last, "
            "choose another hydra.run.dir, or pass overwrite=true"
        )
    return None


def resume_command(output_dir: Path, overrides: list[str]) -> str:
    """The ``pairlie-train`` command that resumes the run in ``output_dir`` started with ``overrides``."""
    own = ("hydra.run.dir", "ckpt_path", "overwrite", "auto_resume")
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in own]
    return shlex.join(["pairlie-train", *kept, f"hydra.run.dir={output_dir}", "ckpt_path=last"])


def check_same_run(cfg: DictConfig, output_dir: Path) -> None:
    """A resume in a run's folder learns from what the run learnt from: one line naming what differs, else nothing.

    ``ckpt_path=last`` without the run's overrides (``experiment=sice``) would otherwise carry a
    SICE run on with the demo's data into the SICE run's folder. Compared with the run's
    ``config.yaml``: the keys in `TRAINED_KEYS`; the schedule, workers, validation and logging may change.
    """
    saved_file = output_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = OmegaConf.load(saved_file)
    differ = []
    for key in TRAINED_KEYS:
        before, now = (OmegaConf.select(c, key, default=None, throw_on_missing=False) for c in (saved, cfg))
        before, now = (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for v in (before, now))
        if before != now:
            differ.append(f"{key}={before} (here {now})")
    if not differ:
        return
    command = output_dir / RESUME_FILE
    how = command.read_text().strip() if command.is_file() else "the overrides that started it"
    raise ConfigError(
        f"hydra.run.dir={output_dir}: that run trained with {'; '.join(differ[:3])}"
        f"{f' and {len(differ) - 3} more' if len(differ) > 3 else ''}; resume it as it started: {how} "
        "(a checkpoint trained on in a new run folder: ckpt_path=FILE without hydra.run.dir)"
    )


def saved_schedule(cfg: DictConfig, output_dir: Path, given: list[str]) -> dict[str, Any]:
    """The schedule of the run being auto-resumed, from its ``config.yaml``, for keys not in ``given`` overrides.

    A requeued job is started again with the command that started it; the run's own schedule is
    what it must finish, whatever defaults have changed since.
    """
    saved_file = output_dir / "config.yaml"
    if not saved_file.is_file():
        return {}
    saved = OmegaConf.load(saved_file)
    named = {o.lstrip("+~").split("=", 1)[0] for o in given}
    schedule = {}
    for key in SCHEDULE_KEYS:
        value = OmegaConf.select(saved, key, default=None)
        if key not in named and value is not None and value != OmegaConf.select(cfg, key, default=None):
            schedule[key] = value
    return schedule


def checkpoint_progress(path: Path) -> tuple[int, int]:
    """``(epochs finished, optimiser steps)`` of a Lightning checkpoint, as Lightning counts them when resuming.

    Read with ``mmap``: the weights are not loaded.
    """
    saved = read_checkpoint(path)  # as data: a file that needs pickle is refused here, before Lightning reads it
    check_data(saved, path)  # every tensor holds what it declares (Lightning restores the optimiser's too)
    check_callback_state(saved.get("callbacks"), path)
    try:
        step = int(saved.get("global_step", 0))
        try:
            # Lightning stops when epoch_progress.current.processed reaches max_epochs
            epochs = int(saved["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError):
            epochs = int(saved.get("epoch", 0))
    except (TypeError, ValueError):
        raise ConfigError(
            f"ckpt_path={path}: its epoch and step are not numbers; not a checkpoint pairlie-train wrote"
        ) from None
    if "state_dict" not in saved:
        raise ConfigError(
            f"ckpt_path={path}: not a pairlie-train checkpoint (no state_dict); resume from a run's .ckpt"
        )
    return epochs, step


def check_callback_state(state: Any, path: Path) -> None:
    """Refuse callback state that names files by URL (``local://``, ``memory://``, ``a::b``).

    Lightning restores a ModelCheckpoint's best and last paths from the checkpoint and deletes the
    previous ones as new checkpoints arrive; it confines local paths to the run's folder, but a path
    with a protocol is removed wherever it points. pairlie's own checkpoints hold plain paths only.
    """

    def visit(value: Any, key: str) -> None:
        if isinstance(value, str) and ("://" in value or "::" in value):
            raise ConfigError(
                f"ckpt_path={path}: its callback state {key} names {value[:80]!r}, a URL where pairlie writes plain "
                "paths; not a checkpoint to resume (its weights load with pairlie-test/-enhance)"
            )
        if isinstance(value, Mapping):
            for name, item in value.items():
                visit(name, key)
                visit(item, f"{key}.{name}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item, key)

    visit(state, "callbacks")


def check_resumable(path: Path, cfg: DictConfig) -> None:
    """Say in one line when resuming would train nothing: the checkpoint already reached this run's end."""
    epochs, step = checkpoint_progress(path)
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps")
    if (max_epochs is not None and max_epochs >= 0 and epochs >= max_epochs) or (max_steps and 0 < max_steps <= step):
        raise ConfigError(
            f"ckpt_path={path}: the checkpoint has finished {epochs} epoch(s), step {step}: already at trainer.max_epochs="
            f"{max_epochs} / trainer.max_steps={max_steps}, nothing to train; resume with the original run's overrides "
            "or raise them"
        )


def check_schedule(cfg: DictConfig) -> None:
    """``trainer.max_epochs`` and ``trainer.max_steps``: whole numbers, -1 (no limit) or more; one line otherwise."""
    trainer = cfg.get("trainer") or {}
    for key in ("max_epochs", "max_steps"):
        value = trainer.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ConfigError(
                f"trainer.{key}={value!r}: must be a whole number >= 0 (or -1 for no limit: then set the other of "
                "trainer.max_epochs / trainer.max_steps)"
            )


def check_classes(cfg: DictConfig) -> None:
    """The data, logger and callback entries name classes of their kind: one line, before a run folder exists."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import Logger

    wanted = [("data", cfg.get("data"), pl.LightningDataModule, "a LightningDataModule")]
    for group, base, kind in (
        ("logger", Logger, "a Lightning Logger"),
        ("callbacks", pl.Callback, "a Lightning Callback"),
    ):
        for name, node in (cfg.get(group) or {}).items():
            wanted.append((f"{group}.{name}", node, base, kind))
    for key, node, base, kind in wanted:
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        cls = locate(node._target_, key)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(
                f"{key}._target_={node._target_}: not {kind} class; name one (see configs/{key.split('.')[0]}/)"
            )


def check_deterministic(cfg: DictConfig) -> None:
    """``trainer.deterministic=true`` on a GPU fails at the first backward: CUDA's reflection-pad backward has no
    deterministic kernel. Refuse it before training."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cfg.trainer.get("deterministic") is True and on_gpu:
        raise ConfigError(
            "trainer.deterministic=true: PairLIE's reflection padding has no deterministic CUDA backward, so the first "
            "step would fail; use trainer.deterministic=warn (deterministic where possible) or false"
        )


def check_val_fraction(limit, datamodule, world_size: int) -> None:
    """A fractional ``trainer.limit_val_batches`` that leaves a process without a validation image.

    Lightning raises on that rank alone while the others wait for it in the metric sync.
    """
    if datamodule.val_set is None or not isinstance(limit, float) or not 0 < limit < 1:
        return
    fewest = len(datamodule.val_set) // world_size  # images of the rank with the fewest
    if int(fewest * limit) < 1:
        raise ConfigError(
            f"trainer.limit_val_batches={limit}: leaves a process with no validation image ({len(datamodule.val_set)} "
            f"images over {world_size} process(es), at least {fewest} each); raise it to >= {1 / max(fewest, 1):.3g}, "
            "give a number of images (an integer), or use data.val_limit"
        )


def in_submitit_job() -> bool:
    """True inside a job started by hydra/launcher=submitit_* (submitit sets SUBMITIT_EXECUTOR)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def own_data(overrides: list[str]) -> list[str]:
    """The command line with ``data=default`` added when it names ``data.train_dir`` but no data preset or experiment.

    The default preset is the demo set, whose short schedule (configs/schedule/demo.yaml) and test
    folder belong to the demo: someone naming their own folders means the published schedule and
    their own validation pairs, which ``data=default`` gives.
    """
    given = [a for a in overrides if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    keys = {o.lstrip("+~").split("=", 1)[0] for o in given}
    if "data.train_dir" in keys and not {"data", "experiment"} & keys:
        first = overrides.index(given[0])  # in front of the others: Hydra's flags (-m, --cfg job) stay before them
        return [*overrides[:first], "data=default", *overrides[first:]]
    return overrides


def epoch_batches(batches: int, limit: int | float | None) -> int:
    """The batches Lightning trains an epoch of ``batches``, under ``trainer.limit_train_batches`` (a count or a fraction)."""
    if limit is None or isinstance(limit, bool):
        return batches
    return int(batches * limit) if isinstance(limit, float) else min(batches, limit)


def schedule_line(cfg: DictConfig, scenes: int, preset: str | None) -> str:
    """One line saying which schedule this run trains, where it comes from and how to choose another.

    The steps are the optimiser steps this process will take: an epoch's batches as
    ``trainer.limit_train_batches`` leaves them, over ``trainer.accumulate_grad_batches``, times
    ``trainer.max_epochs``, ending at ``trainer.max_steps`` where that comes first.
    """
    repeats, batch = cfg.data.repeats, cfg.data.batch_size
    trainer = cfg.trainer
    epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    limit = trainer.get("limit_train_batches")
    accumulate = trainer.get("accumulate_grad_batches") or 1
    batches = -(-scenes * repeats // batch)
    limited = epoch_batches(batches, limit)
    per_epoch = -(-limited // accumulate)
    why = [f"trainer.limit_train_batches={limit}"] * (limited != batches)
    why += [f"trainer.accumulate_grad_batches={accumulate}"] * (accumulate != 1)
    counted = f"{per_epoch} steps" + (f" (of {batches} batches: {', '.join(why)})" if why else "")
    if epochs is None and max_steps in (None, -1):
        epochs = 1000  # Lightning's default
    total = epochs * per_epoch if epochs is not None and epochs >= 0 else None
    if max_steps and max_steps > 0 and (total is None or max_steps < total):
        length = f"up to {max_steps} steps (trainer.max_steps)"
    elif total is None:
        length = "no end (trainer.max_epochs=-1, trainer.max_steps=-1): until stopped"
    else:
        length = f"{epochs} epoch(s) x {counted} = {total} steps"
    if preset == "demo":
        source = "data=demo: the demo set's short schedule (configs/schedule/demo.yaml); your own data.train_dir trains the published one"
    else:
        source = f"data={preset}: the published schedule"
    return (
        f"schedule: {length} ({scenes} scenes x {repeats} visit(s) an epoch, batch {batch}); {source}, "
        "unless trainer.max_epochs=N or trainer.max_steps=N says otherwise"
    )


def test_command(checkpoint: str, test_dir: str | None, demo_dir: str | None) -> str:
    """The ``pairlie-test`` line that scores ``checkpoint`` on the data it was validated on.

    ``test_dir`` None (a run without validation or test folder): a placeholder to fill in, since
    ``pairlie-test`` alone would score the demo set.
    """
    command = f"pairlie-test ckpt_path={checkpoint}"
    demo_val = str(Path(demo_dir) / "val") if demo_dir else None
    if not test_dir and demo_dir:
        command += " data.test_dir=PAIRS"
    elif str(test_dir) != demo_val:  # pairlie-test's own default is the demo's pairs
        command += f" data.test_dir={Path(test_dir).expanduser().resolve()}"
    return command


def summary_lines(
    metrics: dict[str, float],
    output_dir: Path,
    val_count: int,
    checkpoint: str | None,
    test_dir: str | None = None,
    demo_dir: str | None = None,
    trust: str = "",
) -> list[str]:
    """The end-of-run block: scores, run folder, checkpoint, and the commands to look, test and enhance next.

    ``test_dir`` is what the printed ``pairlie-test`` line scores (the run's test, else validation
    folder); it is left out where it is the demo's, ``pairlie-test``'s default, and ``demo_dir`` None
    with ``test_dir`` None (a caller that knows neither) prints the plain command. ``trust``
    (``trust=my_nets``) goes on every command that loads the checkpoint: what its net needs imported.
    """
    lines = ["", "pairlie-train finished"]
    if "val/psnr" in metrics:
        lines.append(
            f"  validation ({val_count} images): input {metrics['val/input_psnr']:.2f} dB / SSIM "
            f"{metrics['val/input_ssim']:.4f}  ->  enhanced {metrics['val/psnr']:.2f} dB / SSIM {metrics['val/ssim']:.4f}"
        )
    note = flat_note(metrics)
    if note:
        lines.append(f"  warning: {note}")
    last = output_dir / "checkpoints" / "last.ckpt"
    if not checkpoint and last.is_file():  # stopped before a validation chose a best one
        checkpoint = str(last)
    lines.append(f"  run folder:  {output_dir}")
    if checkpoint:
        lines.append(f"  checkpoint:  {checkpoint}")
    lines.append("next:")
    if (output_dir / "tensorboard").is_dir():
        lines.append(f"  tensorboard --logdir {output_dir / 'tensorboard'}")
    if checkpoint:
        extra = f" {trust}" if trust else ""
        lines.append(f"  {test_command(checkpoint, test_dir, demo_dir)}{extra}")
        lines.append(f"  pairlie-enhance ckpt_path={checkpoint}{extra} input=PHOTOS output=OUT")
    return lines
