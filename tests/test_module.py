"""The LightningModule's step equals the published loop; optimiser and schedule as published."""

import pytest
import torch

from pairlie.errors import ConfigError
from pairlie.model.losses import consistency_loss, fidelity_loss, retinex_loss
from pairlie.train.module import PairLIEModule


def published_loss(net, im1, im2):
    """The authors' loop: both exposures through all three nets, weights 1, 1, 500."""
    L1, R1, X1 = net(im1)
    L2, R2, X2 = net(im2)
    return consistency_loss(R1, R2) * 1 + retinex_loss(L1, R1, im1, X1) * 1 + fidelity_loss(im1, X1) * 500


def test_training_step_matches_the_published_loss_and_gradients():
    torch.manual_seed(0)
    module = PairLIEModule(width=8)
    im1, im2 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 0.5
    ours = module.training_step((im1, im2), 0)
    ours.backward()
    ours_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    ref = published_loss(module.net, im1, im2)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    for a, b in zip(ours_grads, [p.grad for p in module.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_loss_weights_come_from_config():
    torch.manual_seed(0)
    im1, im2 = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    base = PairLIEModule(width=4)
    heavy = PairLIEModule(width=4, loss={"fidelity": 1000.0})
    heavy.load_state_dict(base.state_dict())
    fid = fidelity_loss(im1, base.net(im1)[2])
    diff = heavy.training_step((im1, im2), 0) - base.training_step((im1, im2), 0)
    torch.testing.assert_close(diff, 500 * fid)


def test_adam_and_step_schedule_as_published():
    module = PairLIEModule(width=4)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["betas"] == (0.9, 0.999)
    assert config["lr_scheduler"]["interval"] == "epoch"
    for _ in range(100):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"gamma": "abc"}, "model.gamma"),
        ({"gamma": -1}, "model.gamma"),
        ({"loss": {"fidelity": -5}}, "model.loss.fidelity"),
        ({"loss": {"fidelty": 5}}, "model.loss.fidelty: .* did you mean model.loss.fidelity"),
        ({"width": 0}, "model.width"),
        ({"compile": "fast"}, "model.compile='fast'"),
    ],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        PairLIEModule(**kwargs)


@pytest.mark.parametrize("width", [8, 64])
def test_flops_per_batch_is_what_torch_counts_for_the_step(width):
    """ThroughputMonitor's FLOP/s rest on ``flops_per_batch``: equal to torch's own FLOP counter."""
    from lightning.fabric.utilities.throughput import measure_flops

    module = PairLIEModule(width=width)
    im1, im2 = torch.rand(2, 2, 3, 24, 20)
    counted = measure_flops(module, lambda: module.training_step((im1, im2), 0), lambda loss: loss)
    assert counted > 0 and module.flops_per_batch == counted
    low = torch.rand(1, 3, 17, 30)
    counted = measure_flops(module, lambda: module.net(low))
    high = (low * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # references come as H x W x 3 grey levels
    module.validation_step({"low": low, "high": high, "name": ["a.png"]}, 5)
    assert module.flops_per_batch == counted == module.net.forward_flops(17 * 30)


def test_a_non_finite_loss_still_runs_backward_with_every_gradient_nan():
    """No host sync to branch on, and under DDP every rank must join the all-reduce: the step runs, poisoned."""
    from lightning.fabric.utilities.throughput import measure_flops

    module = PairLIEModule(width=8)
    im1, im2 = torch.full((1, 3, 16, 16), float("nan")), torch.rand(1, 3, 16, 16)
    counted = measure_flops(module, lambda: module.training_step((im1, im2), 0), lambda loss: loss)
    assert module.flops_per_batch == counted == module.net.training_flops(256)
    assert all(torch.isnan(p.grad).all() for p in module.parameters())


@pytest.mark.slow  # compiling the three nets takes ~20 s on 2 CPU cores
def test_compiled_training_step_matches_eager_and_keeps_checkpoint_keys():
    torch.manual_seed(0)
    eager, compiled = PairLIEModule(width=4), PairLIEModule(width=4, compile=True)
    compiled.load_state_dict(eager.state_dict())
    im1, im2 = torch.rand(2, 1, 3, 32, 32)
    losses, grads = [], []
    for module in (eager, compiled):
        loss = module.training_step((im1, im2), 0)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in module.parameters()])
    assert compiled.hparams.compile == "default"
    assert type(compiled.step_nets()[0]).__name__ == "OptimizedModule" and eager.step_nets()[0] is eager.net.denoiser
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes


def test_compile_on_a_cpu_warns_that_it_is_slower():
    with pytest.warns(UserWarning, match="model.compile on a CPU"):
        PairLIEModule(width=4, compile="reduce-overhead").on_fit_start()


def test_a_step_reads_the_device_once(monkeypatch):
    """Item 14: one fused non-finite flag for the loss and all 30 gradients, read once (was one read per tensor)."""
    torch.manual_seed(0)
    module = PairLIEModule(width=4)
    module.log = module.log_dict = lambda *args, **kwargs: None  # outside a Trainer
    optimizer = module.configure_optimizers()["optimizer"]
    reads = []
    for name in ("item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, *a, _o=original, _n=name: reads.append(_n) or _o(t, *a))
    module.training_step((torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)), 0).backward()
    module.on_before_optimizer_step(optimizer)
    assert reads == ["tolist"] and module.nonfinite_total == 0


def test_large_finite_gradients_are_kept_and_one_inf_is_caught():
    """The fused flag is exact: a max-abs per tensor, which cannot overflow as a 2-norm of 1e30s would."""
    module = PairLIEModule(width=4)
    module.log = lambda *args, **kwargs: None
    optimizer = module.configure_optimizers()["optimizer"]
    for p in module.parameters():
        p.grad = torch.full_like(p, 1e30)
    module.on_before_optimizer_step(optimizer)
    assert module.nonfinite_total == 0 and all(p.grad is not None for p in module.parameters())
    params = list(module.parameters())
    params[-1].grad.view(-1)[0] = float("-inf")
    module.on_before_optimizer_step(optimizer)
    assert module.nonfinite_total == 1 and all(p.grad is None for p in params)


def test_validation_runs_through_the_enhancer_s_bounded_memory_path(monkeypatch):
    """Validation of a huge image streams it in bands on a CPU (tiles on a GPU), as pairlie-test does."""
    from pairlie.infer import streaming

    streamed = []
    original = streaming.stream
    monkeypatch.setattr(
        streaming, "stream", lambda net, image, *a: streamed.append(image.shape) or original(net, image, *a)
    )
    module = PairLIEModule(width=4)
    low = torch.rand(1, 3, 17, 30)
    high = (low * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    module.validation_step({"low": low, "high": high, "name": ["a.png"]}, 5)
    assert streamed == [(1, 3, 17, 30)]


def test_reduce_overhead_marks_each_training_step(monkeypatch):
    """Item 16: CUDA-graph steps are marked, so a skipped step cannot leave torch guessing where one begins."""
    marks = []
    monkeypatch.setattr(torch, "compile", lambda net, mode=None: net)  # no compiling on a CPU test
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append("step"))
    module = PairLIEModule(width=4, compile="reduce-overhead")
    module.log = module.log_dict = lambda *args, **kwargs: None
    for _ in range(2):
        module.training_step((torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)), 0)
    assert marks == ["step", "step"]


def test_the_config_and_the_python_defaults_are_the_same_numbers():
    """PairLIEModule() from Python and pairlie-train's config train the same published settings and nets."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from pairlie.model.losses import PAPER_WEIGHTS
    from pairlie.train.module import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULER

    with initialize_config_module(config_module="pairlie.configs", version_base="1.3"):
        model = compose(config_name="train").model
    config = OmegaConf.to_container(model, resolve=True)
    assert config["loss"] == PAPER_WEIGHTS
    assert config["optimizer"] == DEFAULT_OPTIMIZER
    assert config["scheduler"] == DEFAULT_SCHEDULER
    from pairlie.specs import build_module

    assert repr(build_module(config["net"])) == repr(PairLIEModule().net)
