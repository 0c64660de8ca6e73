"""Find the runs and checkpoints that ``pairlie-train`` left behind."""

from __future__ import annotations

from pathlib import Path

from pairlie.errors import DataError


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
