"""Winograd convolutions (NNPACK): equal to the exact path up to float rounding, in inference and training, with a fallback."""

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import OFFICIAL_WEIGHTS, RunIf, exact_pass, make_paired_tree, run_cli, write_image
from pairlie.errors import ConfigError
from pairlie.evaluate.metrics import paper_scores
from pairlie.infer import streaming, winograd
from pairlie.infer.enhancer import Enhancer
from pairlie.infer.precision import FLAGS_VARIABLE
from pairlie.io.images import quantize, read_rgb, to_tensor
from pairlie.model.checkpoints import load_net
from pairlie.train.module import PairLIEModule

pytestmark = pytest.mark.skipif(
    winograd.unavailable_reason() is not None, reason=f"Winograd unavailable: {winograd.unavailable_reason()}"
)


@pytest.fixture
def no_nnpack(monkeypatch):
    """NNPACK as on a build or CPU without it: every call fails."""

    def broken(*args, **kwargs):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", broken)
    winograd.unavailable_reason.cache_clear()
    yield
    winograd.unavailable_reason.cache_clear()


@pytest.mark.parametrize(
    ("height", "width", "tile"),
    [(2, 5, "auto"), (2, 5, None), (37, 51, "auto"), (37, 51, None), (37, 51, 24), (64, 3000, "auto")],
)
def test_winograd_enhancer_equals_the_direct_one(sharp_net, monkeypatch, tile, height, width):
    monkeypatch.setattr(streaming, "STREAM_WIDTH", 1024)  # 3000 px: three column pieces
    image = torch.rand(2, 3, height, width)
    fast = Enhancer(sharp_net, device="cpu", tile=tile, conv="winograd")
    exact = Enhancer(sharp_net, device="cpu", tile=tile, conv="direct")
    assert (fast.conv, exact.conv) == ("winograd", "direct")
    got, want = fast.decompose(image), exact.decompose(image)
    for name in ("illumination", "reflectance", "denoised", "enhanced"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-4)


def test_auto_takes_winograd_where_it_measures_faster_and_never_on_a_gpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(winograd, "measured_speedup", lambda: winograd.AUTO_MIN_SPEEDUP + 0.1)
    assert winograd.resolve("auto", cpu) == "winograd"
    assert winograd.resolve("auto", torch.device("cuda")) == "direct"
    monkeypatch.setattr(winograd, "measured_speedup", lambda: winograd.AUTO_MIN_SPEEDUP - 0.1)
    assert winograd.resolve("auto", cpu) == "direct"
    assert winograd.resolve("winograd", cpu) == "winograd"  # asked for by name: no measurement decides
    assert winograd.resolve("direct", cpu) == "direct"
    with pytest.raises(ConfigError, match=r"^conv='fast': must be auto, winograd or direct$"):
        winograd.resolve("fast", cpu)


def test_the_speedup_is_measured_once_per_process_and_is_a_plain_ratio():
    first = winograd.measured_speedup()
    assert isinstance(first, float) and 0.05 < first < 20
    assert winograd.measured_speedup() is first  # cached: one measurement per process


def test_without_nnpack_auto_falls_back_and_winograd_is_refused_in_one_line(sharp_net, no_nnpack):
    assert "NNPACK failed" in winograd.unavailable_reason()
    enhancer = Enhancer(sharp_net, device="cpu")
    assert enhancer.conv == "direct"
    image = torch.rand(1, 3, 20, 30)
    torch.testing.assert_close(
        enhancer.decompose(image).enhanced, Enhancer(sharp_net, device="cpu", conv="direct").decompose(image).enhanced
    )
    with pytest.raises(
        ConfigError, match=r"^conv=winograd: not available on cpu: NNPACK failed: .*use conv=auto or conv=direct$"
    ):
        Enhancer(sharp_net, device="cpu", conv="winograd")


def test_a_winograd_call_failing_mid_run_falls_back_to_the_exact_path(sharp_net, monkeypatch, caplog):
    # an AVX-512 CPU, where the exact fp32 path is the row stream the fallback continues in (on AVX2
    # the exact path runs in bands, equal to it within float rounding on an image this small)
    monkeypatch.setenv(FLAGS_VARIABLE, "avx avx2 fma avx512f")
    enhancer = Enhancer(sharp_net, device="cpu", conv="winograd")
    calls = []

    def fails_once_called(*args):
        calls.append(args[0].shape)
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(winograd, "conv2d", fails_once_called)
    image = torch.rand(1, 3, 20, 30)
    with caplog.at_level(logging.WARNING, logger="pairlie"):
        got = enhancer.decompose(image).enhanced
    assert len(calls) == 1 and enhancer.conv == "direct"
    assert "Winograd convolution failed" in caplog.text
    want = Enhancer(sharp_net, device="cpu", conv="direct").decompose(image).enhanced
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sharing_cores_gives_openmp_one_thread_inside_and_restores_the_count():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # more than one, also in a test worker that was given one
    try:
        with winograd.sharing_cores():
            assert torch.get_num_threads() == 1
            with winograd.sharing_cores():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError), winograd.sharing_cores():
            raise ValueError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("cin", "cout"), [(3, 8), (8, 8), (8, 1)])
def test_trainable_convolution_forward_and_gradients_equal_direct(cin, cout):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, cin, 19, 23, generator=generator, requires_grad=True)
    weight = (torch.randn(cout, cin, 3, 3, generator=generator) * 0.3).requires_grad_()
    bias = torch.randn(cout, generator=generator, requires_grad=True)
    grad = torch.randn(2, cout, 17, 21, generator=generator)
    results = []
    for conv in (winograd.conv2d_trainable, F.conv2d):
        y = conv(x, weight, bias)
        results.append((y.detach(), *torch.autograd.grad(y, (x, weight, bias), grad)))
    for got, want in zip(*results, strict=True):
        # Winograd's rounding error scales with the tensor's magnitude, not each element's
        assert float((got - want).abs().max() / want.abs().max()) < 1e-4, (got - want).abs().max()


def test_trainable_convolution_is_direct_under_autocast_and_off_the_cpu_types():
    x, weight = torch.rand(1, 4, 8, 8, dtype=torch.float64), torch.rand(4, 4, 3, 3, dtype=torch.float64)
    y = winograd.conv2d_trainable(x, weight, None)  # NNPACK is float32 only: float64 runs direct
    torch.testing.assert_close(y, F.conv2d(x, weight))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_step_loss_and_gradients_match_the_exact_path():
    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    results = []
    for conv in ("direct", "winograd"):
        torch.manual_seed(1)
        module = PairLIEModule(width=8, conv=conv)
        assert (module.step_nets()[0] is module.net.denoiser) == (conv == "direct")
        loss = module.training_step(batch, 0)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}))
    (loss_w, grads_w), (loss_d, grads_d) = results[1], results[0]
    assert abs(float(loss_w / loss_d) - 1) < 1e-4
    for name, grad in grads_d.items():
        scale = grad.abs().max()
        assert float((grads_w[name] - grad).abs().max() / scale) < 1e-3, name


def test_winograd_training_refuses_compile_and_a_gpu_in_one_line():
    with pytest.raises(ConfigError, match=r"^model.conv=winograd and model.compile: pick one"):
        PairLIEModule(width=4, conv="winograd", compile=True)
    with pytest.raises(ConfigError, match=r"^model.conv='fast': must be direct, winograd or auto$"):
        PairLIEModule(width=4, conv="fast")


def test_checkpoint_keys_do_not_depend_on_the_convolution_path():
    keys = [list(PairLIEModule(width=4, conv=conv).state_dict()) for conv in ("direct", "winograd")]
    assert keys[0] == keys[1]


@pytest.mark.xdist_group("exact_pass")  # one worker computes helpers.exact_pass once for all
@RunIf(shared=True)
@pytest.mark.slow
@pytest.mark.parametrize(("folder", "every", "gamma"), [("LOL-test", 1, 0.14), ("SICE-test", 10, 0.2)])
def test_official_weights_winograd_within_one_grey_level_and_the_same_scores(folder, every, gamma):
    """Every LOL-test image and every 10th SICE-test one (scripts/winograd_exactness.py checks all)."""
    net = load_net(OFFICIAL_WEIGHTS)[0]
    fast = Enhancer(net, gamma=gamma, device="cpu", conv="winograd")
    scores = {"winograd": [], "direct": []}
    worst = 0
    for low, exact in exact_pass(folder, every, gamma):  # the direct path's pass, shared with test_precision
        image = to_tensor(read_rgb(low)[0])
        reference = read_rgb(low.parent.parent / "high" / low.name)[0]
        outputs = {}
        for name, enhanced in (("winograd", fast.decompose(image).enhanced), ("direct", exact)):
            outputs[name] = quantize(enhanced[0])
            scores[name].append(paper_scores(to_tensor(outputs[name]), reference))
        worst = max(worst, int(np.abs(outputs["winograd"].astype(int) - outputs["direct"]).max()))
    assert worst <= 1
    (psnr_w, ssim_w), (psnr_d, ssim_d) = (np.mean(scores[k], axis=0) for k in ("winograd", "direct"))
    assert abs(psnr_w - psnr_d) <= 0.001 and abs(ssim_w - ssim_d) <= 0.0001


@RunIf(clis=("pairlie-test",))
@pytest.mark.parametrize("conv", ["direct", "winograd"])
def test_pairlie_test_records_and_prints_the_convolution_path(tmp_path, tiny_ckpt, conv):
    data = make_paired_tree(tmp_path / "pairs")
    args = [f"ckpt_path={tiny_ckpt}", f"data.test_dir={data}", f"conv={conv}", "noref=false", "hydra.run.dir=out"]
    result = run_cli("pairlie-test", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["conv"] == conv
    assert f"{conv} convolutions" in result.stdout


@RunIf(clis=("pairlie-enhance",))
def test_pairlie_enhance_with_an_unknown_conv_is_one_line(tmp_path, tiny_ckpt):
    photo = write_image(tmp_path / "in.png")
    result = run_cli(
        "pairlie-enhance", f"ckpt_path={tiny_ckpt}", f"input={photo}", "output=out", "conv=fast", cwd=tmp_path
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: conv='fast': must be auto, winograd or direct"
    assert not (tmp_path / "out").exists()
