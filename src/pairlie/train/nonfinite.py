"""Steps with a non-finite loss or gradient: skipped on every rank together, counted, and a run that diverges stopped."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from pairlie.errors import TrainingDiverged


def nonfinite(tensors: list[Tensor]) -> Tensor:
    """A boolean tensor on the tensors' device: True when any element is NaN or infinite.

    One fused max-abs reduction per tensor list and no host synchronisation; unlike a 2-norm, a
    max-abs cannot overflow on large finite values.
    """
    if not tensors:
        return torch.zeros((), dtype=torch.bool)
    return ~torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf")))).all()


class SkipsNonFiniteSteps:
    """LightningModule hooks: a step whose loss or gradient is NaN/Inf changes no weight; ``nonfinite_patience`` in a row stops the run.

    The module sets ``_loss_finite`` (the steps' losses since the last optimiser step),
    ``nonfinite_in_a_row`` and ``nonfinite_total``, and has ``hparams.nonfinite_patience``.
    """

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
