"""The contracts a researcher's parts rely on: Step's tensors, loss terms checked before a run, schedules in the run's units."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from helpers import (
    ExposurePairs,
    RunIf,
    composed,
    cpu_trainer,
    make_paired_tree,
    run_cli,
    run_train,
    save_tiny_checkpoint,
)
from pairlie.errors import ConfigError
from pairlie.train.module import PairLIEModule


def test_step_enhanced_is_illumination_to_gamma_times_reflectance():
    torch.manual_seed(0)
    module = PairLIEModule(width=4, gamma=0.3)
    images = [torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16) * 0.5]
    step = module._forward_step(images)
    assert step.gamma == 0.3
    for k in range(2):
        expected = step.illumination(k) ** 0.3 * step.reflectance(k)
        assert step.enhanced(k).shape == (2, 3, 16, 16)
        torch.testing.assert_close(step.enhanced(k), expected, rtol=0, atol=0)
    # the two exposures differ, so each k picks its own
    assert not torch.allclose(step.enhanced(0), step.enhanced(1))


def test_step_enhanced_on_a_net_of_ones_own_uses_the_runs_gamma():
    class Whole(torch.nn.Module):  # no parts(): the module's other code path
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, im):
            out = torch.sigmoid(self.conv(im))
            return out[:, :1], out[:, 1:], im

    module = PairLIEModule(net=Whole(), gamma=0.5)
    step = module._forward_step([torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)])
    out = module.net(step.images[1])
    torch.testing.assert_close(step.enhanced(1), out[0] ** 0.5 * out[1])


# --- schedules in the run's units ------------------------------------------------------------------


def test_the_cosine_preset_reaches_eta_min_in_a_50_step_run_shorter_than_an_epoch(tiny_cfg):
    """3 scenes x 20 visits = 60 steps an epoch, stopped at 50: the learning rate ends at eta_min, not where it began."""
    cfg = tiny_cfg("model/scheduler=cosine", "data.repeats=20", "trainer.max_steps=50", "logger=none")
    run_train(cfg)
    blob = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert blob["global_step"] == 50
    scheduler = blob["lr_schedulers"][0]
    assert scheduler["T_max"] == 50 and scheduler["last_epoch"] == 50
    assert blob["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert blob["hyper_parameters"]["scheduler"]["interval"] == "step"


def fit_cosine(
    interval: str, max_steps: int = -1, **trainer_args
) -> tuple[torch.optim.lr_scheduler.CosineAnnealingLR, list[float], str]:
    """A width-4 module on 8 random 16x16 pairs with the cosine preset at ``interval``: its scheduler, the lr per step."""
    module = PairLIEModule(
        width=4,
        scheduler={"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": None, "interval": interval},
    )
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = cpu_trainer(max_steps, callbacks=[Record()], **trainer_args)
    trainer.fit(module, torch.utils.data.DataLoader(ExposurePairs(n=8), batch_size=2))
    config = trainer.lr_scheduler_configs[0]
    return config.scheduler, lrs + [trainer.optimizers[0].param_groups[0]["lr"]], config.interval


def test_interval_step_anneals_over_the_runs_optimiser_steps_and_epoch_over_its_epochs():
    # 4 batches an epoch, capped at 3 by limit_train_batches, 2 epochs: 6 optimiser steps
    scheduler, lrs, interval = fit_cosine("step", max_epochs=2, limit_train_batches=3)
    assert interval == "step" and scheduler.T_max == 6 and len(lrs) == 7
    assert lrs[0] == pytest.approx(1e-4) and lrs[3] == pytest.approx(5e-5) and lrs[-1] == pytest.approx(0, abs=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # moves at every step
    scheduler, lrs, interval = fit_cosine("epoch", max_epochs=2, limit_train_batches=3)
    assert interval == "epoch" and scheduler.T_max == 2
    assert lrs[:3] == [pytest.approx(1e-4)] * 3 and lrs[3:6] == [pytest.approx(5e-5)] * 3  # moves once an epoch
    assert lrs[-1] == pytest.approx(0, abs=1e-12)


def test_a_run_length_counts_accumulation_and_max_steps():
    # 4 batches an epoch, 2 accumulated per step: 2 steps an epoch; max_steps=3 ends the run in its 2nd of 5 epochs
    scheduler, _, _ = fit_cosine("step", max_epochs=5, max_steps=3, accumulate_grad_batches=2)
    assert scheduler.T_max == 3
    scheduler, _, _ = fit_cosine("epoch", max_epochs=5, max_steps=3, accumulate_grad_batches=2)
    assert scheduler.T_max == 2


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ({"interval": "batch"}, "model.scheduler.interval='batch': must be step or epoch"),
        (  # a length left to the run still has its other arguments checked, on a stand-in length
            {"interval": "step", "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": None, "eta_mn": 0},
            "model.scheduler: torch.optim.lr_scheduler.CosineAnnealingLR could not be built "
            "(CosineAnnealingLR.__init__() got an unexpected keyword argument 'eta_mn')",
        ),
    ],
)
def test_a_scheduler_spec_is_checked_when_the_module_is_built(scheduler, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        PairLIEModule(width=4, scheduler=scheduler)


def test_a_length_in_epochs_needs_an_epoch_limit():
    from pairlie.train.module import check_run_length

    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": None, "interval": "epoch"}
    with pytest.raises(ConfigError, match=re.escape("model.scheduler.T_max=null follows the run's length in epochs")):
        check_run_length(cosine, -1, 500)
    check_run_length(cosine, None, -1)  # Lightning's 1000 epochs
    check_run_length({**cosine, "interval": "step"}, -1, 500)
    with pytest.raises(ConfigError, match="the run has none: set trainer.max_steps"):
        check_run_length({**cosine, "interval": "step"}, -1, -1)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["trainer.max_epochs=5", "+trainer.limit_train_batches=10"],
            "schedule: 5 epoch(s) x 10 steps (of 179 batches: trainer.limit_train_batches=10) = 50 steps (179 scenes",
        ),
        (
            ["trainer.max_epochs=5", "+trainer.limit_train_batches=0.5"],
            "schedule: 5 epoch(s) x 89 steps (of 179 batches: trainer.limit_train_batches=0.5) = 445 steps (179",
        ),
        (
            ["trainer.max_epochs=5", "+trainer.accumulate_grad_batches=4", "+trainer.limit_train_batches=10"],
            "schedule: 5 epoch(s) x 3 steps (of 179 batches: trainer.limit_train_batches=10, "
            "trainer.accumulate_grad_batches=4) = 15 steps",
        ),
        # max_steps beyond what the epochs hold: the epochs end the run
        (["trainer.max_epochs=2", "trainer.max_steps=1000"], "schedule: 2 epoch(s) x 179 steps = 358 steps (179"),
    ],
)
def test_the_schedule_line_counts_the_steps_that_will_run(overrides, expected):
    from pairlie.train.runs import schedule_line

    line = schedule_line(composed("data=sice", *overrides, hydra=False), 179, "sice")
    assert line.startswith(expected), line


# --- loss terms checked on a probe step before training ------------------------------------------


def exposure_control(step, exposure: float = 0.6, patch: int = 16):
    """The docs' example term: mean over patches of |mean brightness of I - exposure|."""
    brightness = torch.nn.functional.avg_pool2d(step.enhanced(0).mean(dim=1, keepdim=True), patch)
    return (brightness - exposure).abs().mean()


def as_a_tensor(step):
    return step.mean()  # treats the step as an image


def per_pixel(step):
    return (step.enhanced(0) - 0.5).abs()  # not reduced to a scalar


def a_number(step):
    return float(step.denoised(0).mean())


def in_place(step):
    r = step.reflectance(0)
    loss = (r**2).mean()
    r.mul_(2)  # autograd needs r for the square's gradient: fails in backward only
    return loss


def probe(**terms):
    from pairlie.model.losses import probe_terms

    module = PairLIEModule(width=4, loss={name: {"_target_": f"{__name__}.{fn}"} for name, fn in terms.items()})
    probe_terms(module.terms, module.net, module.hparams.gamma)
    return module


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            "as_a_tensor",
            f"model.loss.bad: {__name__}.as_a_tensor(step) failed on a probe step: AttributeError: 'Step' object has no "
            "attribute 'mean'; a term is fn(step, **kwargs) returning a scalar tensor (docs/your-own-model.md)",
        ),
        (
            "per_pixel",
            f"model.loss.bad: {__name__}.per_pixel(step) returned a tensor of shape (1, 3, 32, 32), not a scalar",
        ),
        ("a_number", f"model.loss.bad: {__name__}.a_number(step) returned float, not a tensor on a probe step"),
        ("in_place", f"model.loss.bad: {__name__}.in_place(step) failed on a probe step: RuntimeError: one of the var"),
    ],
)
def test_the_probe_names_a_term_that_fails_and_its_first_error(fn, message):
    with pytest.raises(ConfigError) as caught:
        probe(exposure="exposure_control", bad=fn)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_probe_passes_good_terms_and_leaves_no_gradients():
    module = probe(exposure="exposure_control")
    assert [t.name for t in module.terms] == ["consistency", "retinex", "fidelity", "exposure"]
    assert all(p.grad is None for p in module.parameters())


def test_a_wrong_signature_shows_the_expected_form():
    from pairlie.model.losses import build_terms

    with pytest.raises(ConfigError) as caught:
        build_terms({"exposure": {"_target_": f"{__name__}.exposure_control", "exposre": 0.5}})
    assert str(caught.value) == (
        f"model.loss.exposure: {__name__}.exposure_control does not take these arguments (got an unexpected keyword "
        "argument 'exposre'): it is called as exposure_control(step, exposre=0.5); a term is fn(step, **kwargs) "
        "returning a scalar tensor (docs/your-own-model.md)"
    )


TERM_MODULE = """
import torch.nn.functional as F


def exposure_control(step, exposure=0.6):
    return (F.avg_pool2d(step.mean(dim=1, keepdim=True), 16) - exposure).abs().mean()  # step is not an image
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["+model.loss.exposure._target_=my_terms.exposure_control"],
            "error: model.loss.exposure: my_terms.exposure_control(step) failed on a probe step: AttributeError: "
            "'Step' object has no attribute 'mean'; a term is fn(step, **kwargs) returning a scalar tensor",
        ),
        (
            [
                "model/scheduler=cosine",
                "model.scheduler.interval=epoch",
                "trainer.max_epochs=-1",
                "trainer.max_steps=9",
            ],
            "error: model.scheduler.T_max=null follows the run's length in epochs (model.scheduler.interval=epoch), "
            "and trainer.max_epochs sets no limit",
        ),
    ],
    ids=["broken-term", "cosine-in-epochs-without-an-epoch-limit"],
)
@RunIf(clis=("pairlie-train",))
def test_pairlie_train_refuses_in_one_line_before_a_run_folder_exists(args, message, scene_tree, paired_tree, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "my_terms.py").write_text(TERM_MODULE)
    data = [f"data.train_dir={scene_tree}", f"data.val_dir={paired_tree}", "model.width=4", "trainer.accelerator=cpu"]
    result = run_cli("pairlie-train", *data, *args, cwd=folder)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in folder.iterdir() if p.name != "__pycache__") == ["my_terms.py"]  # no logs/


def test_interval_step_needs_no_epoch_limit():
    scheduler, lrs, _ = fit_cosine("step", max_epochs=-1, max_steps=5)
    assert scheduler.T_max == 5 and lrs[-1] == pytest.approx(0, abs=1e-12)


# --- HParams: each key once, only those that tell a run apart ----------------------------------------


def logged_hparams(run: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    accumulator = EventAccumulator(str(run / "tensorboard")).Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = HParamsPluginData.FromString(content).session_start_info
    return {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in session.hparams.items()}


def test_hparams_of_one_override_is_that_key_alone():
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from pairlie.train.hparams import run_params

    def params(*overrides):
        cfg = composed(*overrides)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return run_params(cfg)

    assert params("model.loss.fidelity=100") == {"model.loss.fidelity": 100}
    assert params("model.loss.fidelity=500") == {"model.loss.fidelity": 500}  # given (a sweep's value), if default
    # a group choice adds what it changes, not every key of the group
    assert params("model/scheduler=cosine") == {
        "model.scheduler._target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "model.scheduler.T_max": "None",
        "model.scheduler.eta_min": 0.0,
        "model.scheduler.interval": "step",
    }


def test_a_runs_hparams_are_its_overrides_each_once(tiny_cfg, tmp_path, scene_tree, paired_tree):
    cfg = tiny_cfg("model.loss.fidelity=100", "trainer.max_steps=2", "data.val_limit=1")
    run_train(cfg)
    logged = logged_hparams(Path(cfg.paths.output_dir))
    assert logged == {
        # the fixture's overrides (callbacks.* and paths.* are not settings HParams shows)
        "data.train_dir": str(scene_tree),
        "data.val_dir": str(paired_tree),
        "data.demo_root": "None",
        "data.patch_size": 32,
        "data.batch_size": 1,
        "data.repeats": 1,
        "model.width": 4,
        "model.net.width": 4,  # reads model.width
        "trainer.accelerator": "cpu",
        "trainer.max_epochs": 1,
        "trainer.log_every_n_steps": 1,
        # this test's
        "model.loss.fidelity": 100,
        "trainer.max_steps": 2,
        "data.val_limit": 1,
    }


def test_a_module_fit_from_python_logs_its_own_keys_that_differ(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    module = PairLIEModule(width=4, gamma=0.3, loss={"fidelity": 100.0})
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=TensorBoardLogger(tmp_path, name="", version="", sub_dir="tensorboard"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(ExposurePairs(n=2), batch_size=1))
    assert logged_hparams(tmp_path) == {
        "model.width": 4,
        "model.net.width": 4,
        "model.gamma": pytest.approx(0.3),
        "model.loss.fidelity": 100,
    }


# --- pairlie-test names flat outputs as training does ----------------------------------------------


@pytest.mark.parametrize(("sharpen", "flat"), [(1.0, True), (4.0, False)])
@RunIf(clis=("pairlie-test",))
def test_pairlie_test_says_when_its_outputs_are_flat(sharpen, flat, tmp_path):
    """A plain random width-4 checkpoint gives flat grey images; sharpened weights keep the input's texture."""
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt", sharpen=sharpen)
    pairs = make_paired_tree(tmp_path / "pairs", names=("x.png", "y.png"), size=(64, 48))
    out = tmp_path / "out"
    result = run_cli(
        "pairlie-test", f"ckpt_path={ckpt}", f"data.test_dir={pairs}", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    note = (
        "outputs are constant: 100% of the test images came out flat (no texture), typical before a few hundred "
        "steps; train longer (trainer.max_epochs or trainer.max_steps)"
    )
    if flat:
        assert metrics["flat"] == 1.0 and metrics["flat_images"] == ["x.png", "y.png"]
        assert metrics["warnings"] == [note]
        assert f"warning: {note}" in result.stdout
        assert f"warning: {note}" in (out / "report.html").read_text()
    else:
        assert metrics["flat"] == 0.0 and metrics["flat_images"] == [] and metrics["warnings"] == []
        assert "outputs are constant" not in result.stdout


class Picky(torch.nn.Module):
    """Takes only images of at least 40 pixels a side, in multiples of 16, as it declares."""

    min_size, alignment = 40, 16

    def __init__(self, fail: bool = False):
        super().__init__()
        self.conv, self.fail = torch.nn.Conv2d(3, 4, 3, padding=1), fail

    def forward(self, im):
        if self.fail or im.shape[-1] < 40 or im.shape[-1] % 16:
            raise ValueError(f"cannot take {im.shape[-1]} pixels")
        out = torch.sigmoid(self.conv(im))
        return out[:, :1], out[:, 1:], im


def test_the_probe_fits_the_nets_declared_size_and_names_a_net_that_fails():
    PairLIEModule(net=Picky()).check_before_fit(1, -1)  # probed at 48x48: 40 rounded up to a multiple of 16
    with pytest.raises(ConfigError, match=re.escape("model.net: its forward failed on a probe batch of 1x3x48x48 (")):
        PairLIEModule(net=Picky(fail=True)).check_before_fit(1, -1)
