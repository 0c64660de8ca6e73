"""Lightning callbacks of pairlie's own: a checkpoint on pre-emption or Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnInterrupt(L.Callback):
    """On SIGTERM (pre-emption) or Ctrl-C, write ``last.ckpt`` and say how to resume.

    Lightning turns SIGTERM into a clean stop at the next batch; this callback adds the checkpoint.
    Lightning writes checkpoints through a temporary file and a rename, so a kill during the write
    leaves the previous ``last.ckpt`` whole.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return  # a failing run keeps its last good checkpoint rather than its failed state
        kind = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            run_dir = self.path.parent.parent
            print(
                f"\ninterrupted by {kind} at step {trainer.global_step}: saved {self.path}\n"
                f"resume with: pairlie-train hydra.run.dir={run_dir} ckpt_path=last (and the same overrides)",
                flush=True,
            )


def pairs_in_batch(batch) -> int:
    """Samples in a batch for Lightning's ThroughputMonitor: exposure pairs in training, images in validation."""
    return int(batch["low"].shape[0] if isinstance(batch, dict) else batch[0].shape[0])
