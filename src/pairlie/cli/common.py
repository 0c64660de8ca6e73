"""What every CLI shares: the config location and one-line reporting of user errors."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from pairlie.configuration import CliSpec, check
from pairlie.errors import PairLIEError, user_error
from pairlie.io.speed import (
    apply_speed_settings,  # noqa: F401  (the CLIs read it from here)
)
from pairlie.train.runs import check_run_folder

# A package path, not a file path: it resolves the same after `pip install .` as in a checkout.
CONFIG_PATH = "pkg://pairlie.configs"

log = logging.getLogger("pairlie")
STARTED = time.time()
# folders on the way to the run folder that existed before this process: a refused run leaves them
_EXISTED: set[Path] = set()
_LOG_DIR: Path | None = None


def run_cli(spec: CliSpec, hydra_main: Callable[[], Any]) -> None:
    """A console script: check the command line (``--help``, one-line mistakes), then run the Hydra app.

    A net, loss term or dataset of one's own in a file in the working folder is found by its
    ``_target_`` or ``trust=`` name (`pairlie.trust.add_working_folder_for`, called by the check).
    """
    try:
        _run(spec, hydra_main)
    except BrokenPipeError:  # `pairlie-test --help | head`: the reader has gone, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        sys.exit(141)  # as a process killed by SIGPIPE, what a shell expects of a pipe's writer


def _run(spec: CliSpec, hydra_main: Callable[[], Any]) -> None:
    try:
        cfg = check(sys.argv[1:], spec)
        check_run_folder(cfg, multirun=bool({"-m", "--multirun"} & set(sys.argv[1:])))
    except PairLIEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    global _LOG_DIR
    try:
        log_dir = _LOG_DIR = Path(cfg.paths.log_dir).resolve()
        _EXISTED.update(p for p in (log_dir, *log_dir.glob("*"), *log_dir.glob("*/*")) if p.is_dir())
    except Exception:  # a log_dir that does not resolve here is Hydra's to report
        pass
    hydra_main()


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a user error is printed as one line ``error: ...`` and exits with status 2."""
    try:
        return fn(*args)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        remove_unused_run_folder()
        sys.exit(2)


def remove_unused_run_folder() -> None:
    """After a refused run: remove the run folder Hydra made for it if it holds nothing but Hydra's own files.

    Only a folder made by this process (every entry newer than its start) holding only ``.hydra/``
    and the job's log goes; anything else, or an older folder given as ``hydra.run.dir``, stays.
    """
    try:
        hydra_cfg = HydraConfig.get()
        folder = Path(hydra_cfg.runtime.output_dir)
    except Exception:  # not under Hydra (a test calling the task), or no run folder
        return
    if not folder.is_dir() or folder.resolve() == Path.cwd().resolve():
        return
    ours = {".hydra", f"{hydra_cfg.job.name}.log"}
    entries = list(folder.rglob("*"))
    if any(p.relative_to(folder).parts[0] not in ours for p in entries):
        return
    if any(p.stat().st_mtime < STARTED - 1 for p in [folder, *entries]):
        return
    shutil.rmtree(folder, ignore_errors=True)
    # and the empty folders made on the way to it (logs/test/runs/), never one that was there before
    for parent in folder.resolve().parents:
        if _LOG_DIR is None or not parent.is_relative_to(_LOG_DIR) or parent in _EXISTED:
            break
        try:
            parent.rmdir()
        except OSError:
            break
