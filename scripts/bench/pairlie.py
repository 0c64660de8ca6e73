"""pairlie's own columns: the exact path, Winograd, without the allocator setting, bf16 and int8.

``pairlie_exact``: ``PairLIEModule.training_step`` (decoded scenes cached, no second illumination)
with the module's own optimiser, stepped in Lightning's order, and the ``Enhancer`` with
``conv="direct"``. The process sets ``pairlie.io.speed.keep_freed_memory()`` as pairlie's CLIs do,
except in ``pairlie_exact_default_malloc``. ``pairlie_winograd``: ``conv="winograd"``.
``pairlie_bf16`` and ``pairlie_int8`` (inference only) are refused where pairlie refuses them:
bf16 where the CPU emulates it, int8 where it has no int8 dot products. ``pairlie_default``
(inference only): the Enhancer as users get it, ``conv`` and ``precision`` left to ``auto``.
"""

from __future__ import annotations

import warnings

import torch

from bench.column import (
    BF16,
    DEFAULT,
    DEFAULT_MALLOC,
    EXACT,
    GAMMA,
    INT8,
    PATCH,
    WINOGRAD,
    Column,
    Unavailable,
    calibration_images,
    column,
    official_net,
)
from bench.published import fixed_inputs
from pairlie.errors import ConfigError
from pairlie.infer.precision import native_bf16

PAIRLIE_CONV = {EXACT: "direct", WINOGRAD: "winograd", DEFAULT_MALLOC: "direct", BF16: "direct", INT8: "direct"}
PAIRLIE_CONV[DEFAULT] = "auto"
# the others: fp32; pairlie_default: what `pairlie-enhance` and `Enhancer(net)` choose on this machine
PAIRLIE_PRECISION = {BF16: "bf16", INT8: "int8", DEFAULT: "auto"}


@column(EXACT, WINOGRAD, DEFAULT_MALLOC, BF16, INT8, DEFAULT)
class Pairlie(Column):
    """pairlie: PairLIEModule.training_step with its configured Adam, stepped in Lightning's order; the Enhancer."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        from pairlie.infer.enhancer import Enhancer

        if self.kind != DEFAULT_MALLOC:
            from pairlie.io.speed import keep_freed_memory

            keep_freed_memory()
        self.conv = PAIRLIE_CONV[self.kind]
        precision = PAIRLIE_PRECISION.get(self.kind, "fp32")
        if precision == "bf16" and self.device.type == "cpu" and not native_bf16():
            raise Unavailable("this CPU emulates bf16 (no avx512_bf16 or amx_bf16): ~50x slower than fp32")
        calibration = calibration_images(self.data_dir) if precision == "int8" else None
        try:
            self.enhancer = Enhancer(
                official_net(),
                gamma=GAMMA,
                device=str(self.device),
                conv=self.conv,
                precision=precision,
                calibration=calibration,
            )
        except ConfigError as error:  # int8 on a CPU without VNNI/AMX, or off the CPU
            raise Unavailable(str(error)) from None
        resolved = self.enhancer.conv
        if resolved != self.conv and self.conv != "auto":
            raise Unavailable(f"Enhancer(conv={self.conv!r}) runs conv={resolved!r} here")
        self.info.update(conv=resolved, precision=self.enhancer.precision, enhancer=repr(self.enhancer))
        self.module = None
        # training_step logs through self.log, which outside a Trainer only warns: Lightning's logging
        # is timed in the whole-process runs
        warnings.filterwarnings("ignore", r"You are trying to `self.log\(\)`")

    def training_module(self):
        from pairlie.train.module import PairLIEModule

        return PairLIEModule(width=64, conv=self.conv).to(self.device)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.module is None:
            from pairlie.data.datasets import ExposurePairDataset

            self.dataset = ExposurePairDataset(self.scenes(), patch_size=PATCH)
            torch.manual_seed(0)
            self.module = self.training_module()
            self.opt = self.module.configure_optimizers()["optimizer"]
            self.steps = 0
        return self.dataset[int(self.rng.integers(len(self.dataset)))]

    def step(self, batch) -> None:
        # Lightning's automatic optimisation, in its order: the step, zero_grad, backward, the
        # before-optimizer-step hook (pairlie's non-finite check), the optimizer
        loss = self.module.training_step(batch, self.steps)
        self.opt.zero_grad()
        loss.backward()
        self.module.on_before_optimizer_step(self.opt)
        self.opt.step()
        self.steps += 1

    def same_loss(self) -> float:
        net, im1, im2 = fixed_inputs(self.device)
        module = self.training_module()
        module.net.load_state_dict(net.state_dict())
        with torch.no_grad():
            return module.training_step((im1, im2), 0).item()

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        return self.enhancer.decompose(image).enhanced[0]
