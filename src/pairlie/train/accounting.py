"""What a training step costs: FLOPs per batch for Lightning's throughput monitor, the GPU memory peak per epoch."""

from __future__ import annotations

import torch


class Accounting:
    """LightningModule hooks: ``flops_per_batch`` (set by the steps in ``_batch_flops``) and ``perf/gpu_max_memory_gb``.

    The training peak is kept apart from validation's full-size images.
    """

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
