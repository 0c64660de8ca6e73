"""GPU-cluster paths proven on a CPU: gloo DDP, a real GradScaler (16-mixed on CPU), mocked CUDA calls."""

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader

from helpers import ExposurePairs, RunIf, cpu_trainer, make_paired_tree
from pairlie.data import PairedImageDataset, discover_pairs
from pairlie.errors import TrainingDiverged
from pairlie.infer.enhancer import Enhancer
from pairlie.train.module import PairLIEModule

trainer = cpu_trainer


Pairs = partial(ExposurePairs, darker=0.5)  # the second exposure half as bright


def fp16_mixed(**scaler_kwargs) -> MixedPrecision:
    """Lightning's 16-mixed plugin on the CPU: fp16 autocast and a real GradScaler."""
    scaler = torch.amp.GradScaler("cpu", **scaler_kwargs) if scaler_kwargs else None
    return MixedPrecision("16-mixed", "cpu", scaler=scaler)


class RecordRank(L.Callback):
    """Each rank saves its skip counters, step and weights when training ends (ddp_spawn returns rank 0's only)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_end(self, trainer, module):
        record = {
            "nonfinite_total": module.nonfinite_total,
            "nonfinite_in_a_row": module.nonfinite_in_a_row,
            "global_step": trainer.global_step,
            "params": [p.detach().clone() for p in module.parameters()],
        }
        torch.save(record, self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.parametrize("scaler", [False, True], ids=["32-true", "16-mixed"])
def test_ddp_ranks_skip_a_nan_step_together_and_finish(tmp_path, scaler):
    """Item 1: 2 gloo processes, one NaN pixel in the sample rank 0 draws first; both skip that step, then train on."""
    torch.manual_seed(0)
    module = PairLIEModule(width=4, nonfinite_patience=2)
    # use_distributed_sampler, not shuffled: rank 0 draws items 0, 2, 4, rank 1 draws 1, 3, 5
    plugins = [fp16_mixed()] if scaler else None
    fit = trainer(3, strategy="ddp_spawn", devices=2, plugins=plugins, callbacks=[RecordRank(tmp_path)])
    fit.fit(module, DataLoader(Pairs(poisoned={0}, n=6), batch_size=1))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    counters = [(r["nonfinite_total"], r["nonfinite_in_a_row"], r["global_step"]) for r in ranks]
    # with a scaler the later steps may be its warm-up overflows: skipped, but neither counted nor a reset
    assert counters[0] == counters[1] == (1, 1 if scaler else 0, 3)
    assert all(torch.isfinite(p).all() for record in ranks for p in record["params"])
    for a, b in zip(ranks[0]["params"], ranks[1]["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the ranks stayed in step


def test_gradscaler_warm_up_is_not_divergence():
    """Item 2: the scaler's first overflows (65536 down to 1024 here) are its own business, not non-finite steps."""
    torch.manual_seed(0)
    module = PairLIEModule(width=4, loss={"fidelity": 5000.0}, nonfinite_patience=5)
    fit = trainer(8, plugins=[fp16_mixed()])
    fit.fit(module, DataLoader(Pairs(), batch_size=1))
    assert fit.precision_plugin.scaler.get_scale() <= 2048  # at least 6 overflow steps happened
    assert module.nonfinite_total == 0 and fit.global_step == 8


class InfGradients(PairLIEModule):
    """Every gradient of N's first conv is infinite at every step, whatever the scale."""

    def on_fit_start(self):
        super().on_fit_start()
        self.net.denoiser.layers[1].weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))


def test_under_a_scaler_overflows_count_once_the_scale_has_collapsed():
    """Item 2: an overflow at a scale of 1 or below is no longer the scaler's warm-up: it counts."""
    module = InfGradients(width=4, nonfinite_patience=2)
    fit = trainer(20, plugins=[fp16_mixed(init_scale=4.0)])
    with pytest.raises(TrainingDiverged, match="2 steps in a row with a non-finite gradient"):
        fit.fit(module, DataLoader(Pairs(n=20), batch_size=1))
    assert fit.global_step == 3  # scale 4 and 2 skipped by the scaler, 1 counted, 0.5 counted and stopped


def test_under_a_scaler_a_non_finite_loss_counts():
    module = PairLIEModule(width=4, nonfinite_patience=2)
    with pytest.raises(TrainingDiverged, match="2 steps in a row with a non-finite loss"):
        trainer(6, plugins=[fp16_mixed()]).fit(module, DataLoader(Pairs(poisoned={3, 4}), batch_size=1))
    assert module.nonfinite_total == 2


def test_losses_are_fp32_under_fp16_autocast():
    """Item 13: X / L with L ~ 5e-6 is ~1e5, past fp16's 65504; the loss stays finite and close to fp32's."""
    torch.manual_seed(0)
    module = PairLIEModule(width=4)
    last = module.net.illumination.layers[13]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-12.2)  # sigmoid(-12.2) = 5e-6: representable in fp16, and X / L overflows there
    module.log = lambda *args, **kwargs: None
    im1, im2 = torch.rand(2, 1, 3, 16, 16)
    reference = module.training_step((im1, im2), 0)
    with torch.autocast("cpu", dtype=torch.float16):
        mixed = module.training_step((im1, im2), 0)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    torch.testing.assert_close(mixed, reference, rtol=2e-2, atol=0)


@pytest.mark.parametrize("mixed", ["16-mixed", "bf16-mixed"])
def test_validation_under_mixed_precision_scores_the_fp32_numbers(tmp_path, mixed):
    """Item 10: validation runs the net in fp32 under any autocast, so val/ metrics equal a 32-true run's."""
    torch.manual_seed(0)
    module = PairLIEModule(width=8)
    with torch.no_grad():  # weights large enough that fp16/bf16 rounding moves grey levels
        for conv in (m for m in module.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.mul_(4.0)
    val = DataLoader(PairedImageDataset(discover_pairs(make_paired_tree(tmp_path / "val"))), batch_size=1)
    fp32 = trainer(1).validate(module, val, verbose=False)[0]
    plugin = fp16_mixed() if mixed == "16-mixed" else MixedPrecision("bf16-mixed", "cpu")
    assert trainer(1, plugins=[plugin]).validate(module, val, verbose=False)[0] == fp32


def test_gpu_memory_peak_is_training_s_per_epoch_and_the_max_over_ranks(monkeypatch):
    """Item 12, with torch.cuda mocked: reset each epoch, validation's peak left out, logged as a max across ranks."""
    calls, peak = [], {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak["bytes"])
    module = PairLIEModule(width=4)
    module._device = torch.device("cuda", 0)
    logged = []
    module.log = lambda name, value, **kwargs: logged.append((name, value, kwargs))
    module.on_train_epoch_start()
    assert calls == ["reset"]
    peak["bytes"] = 3 * 2**30  # training steps
    module.on_validation_start()
    peak["bytes"] = 9 * 2**30  # a full-size validation image
    calls.clear()
    module.on_validation_epoch_end()
    assert calls == ["reset"]
    peak["bytes"] = 2 * 2**30  # training after validation, from the reset
    module.on_train_epoch_end()
    assert logged == [("perf/gpu_max_memory_gb", 3.0, {"sync_dist": True, "reduce_fx": "max"})]


@RunIf(cuda=True)
def test_on_a_gpu_a_cpu_enhancer_reads_a_cuda_image_after_its_copy_lands(sharp_net):
    """Item 11 on real hardware: the GPU->CPU copy is complete before the CPU reads it."""
    image = torch.rand(3, 301, 257)
    expected = Enhancer(sharp_net, device="cpu").enhance(image)
    got = Enhancer(sharp_net, device="cpu").enhance(image.cuda())
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0)


@RunIf(cuda=True)
def test_on_a_gpu_16_mixed_warm_up_is_not_divergence():
    """Items 2 and 13 on real hardware: cuda 16-mixed with fidelity 5000 trains with no non-finite steps counted."""
    torch.manual_seed(0)
    module = PairLIEModule(width=8, loss={"fidelity": 5000.0}, nonfinite_patience=3)
    fit = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="16-mixed",
        max_steps=12,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    fit.fit(module, DataLoader(Pairs(n=12), batch_size=1))
    assert module.nonfinite_total == 0 and fit.global_step == 12
