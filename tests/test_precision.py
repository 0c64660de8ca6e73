"""precision=auto|fp32|bf16|fp16|int8: what each resolves to on which CPU, bf16 numerics and the bf16 and int8 bounds.

conftest.py makes every test see an AVX2-only CPU; the tests here set the flags of other CPUs.
"""

import pytest
import torch

from helpers import OFFICIAL_WEIGHTS, SHARED_DATA, RunIf, exact_scores
from pairlie.errors import ConfigError
from pairlie.infer import precision, winograd
from pairlie.infer.enhancer import Enhancer

CPU = torch.device("cpu")
AVX2 = "fpu sse avx avx2 fma"  # a Zen 2/3 EPYC: bf16 emulated, int8 through AVX2
ZEN4 = "avx2 avx512f avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS = "avx2 avx512f avx512_vnni avx_vnni amx_bf16 amx_int8 amx_tile"
REAL_INT8 = any(flag in precision._cpuinfo()[1] for flag in precision.INT8_FLAGS)  # this machine, not the mock


def plain(net, image):
    with torch.no_grad():
        return net(image)


@pytest.mark.parametrize(
    ("flags", "bf16", "int8"),
    [(AVX2, False, False), (ZEN4, True, True), (SAPPHIRE_RAPIDS, True, True), ("avx2 avx_vnni", False, True)],
)
def test_native_formats_come_from_the_cpu_flags(monkeypatch, flags, bf16, int8):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, flags)
    assert precision.native_bf16() is bf16 and precision.native_int8() is int8
    description = precision.cpu_description()
    assert description["native_bf16"] is bf16
    assert set(description["flags"]) == set(flags.split()) & {*precision.BF16_FLAGS, *precision.INT8_FLAGS}
    assert description["torch_capability"] == torch.backends.cpu.get_cpu_capability()


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, AVX2)
    assert precision.resolve("auto", CPU) == "fp32"
    monkeypatch.setenv(precision.FLAGS_VARIABLE, ZEN4)
    assert precision.resolve("auto", CPU) == "bf16"
    # an explicit conv names an fp32 algorithm (conv=direct: the exact path); GPUs keep fp32 unless asked
    assert precision.resolve("auto", CPU, conv="direct") == "fp32"
    assert precision.resolve("auto", CPU, conv="winograd") == "fp32"
    assert precision.resolve("auto", torch.device("cuda")) == "fp32"
    assert precision.resolve("auto", torch.device("cuda"), half=True) == "fp16"  # half=true's old meaning


def test_gpus_take_fp16_and_bf16_by_name_and_int8_is_a_cpu_path():
    cuda = torch.device("cuda")
    assert precision.resolve("fp16", cuda) == "fp16" and precision.resolve("bf16", cuda) == "bf16"
    assert precision.resolve("fp32", cuda) == "fp32"
    with pytest.raises(ConfigError, match=r"^precision=int8 is a CPU path"):
        precision.resolve("int8", cuda)
    with pytest.raises(ConfigError, match=r"^precision=bf16 runs on a CPU or CUDA GPU, not mps"):
        precision.resolve("bf16", torch.device("mps"))


def test_the_enhancer_s_auto_runs_today_s_exact_path_without_native_bf16(sharp_net, monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, AVX2)
    image = torch.rand(3, 37, 45)
    auto = Enhancer(sharp_net, device="cpu")
    assert auto.precision == "fp32" and auto.dtype == torch.float32
    exact = Enhancer(sharp_net, device="cpu", conv=auto.conv, precision="fp32").decompose(image)
    got = auto.decompose(image)
    for a, b in zip(
        (got.illumination, got.reflectance, got.denoised),
        (exact.illumination, exact.reflectance, exact.denoised),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_enhancer_s_auto_takes_bf16_with_native_bf16(sharp_net, monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, SAPPHIRE_RAPIDS)
    enhancer = Enhancer(sharp_net, device="cpu")
    assert enhancer.precision == "bf16" and enhancer.dtype == torch.bfloat16
    assert enhancer.conv == "direct"  # Winograd (NNPACK) is fp32 only
    assert Enhancer(sharp_net, device="cpu", conv="direct").precision == "fp32"
    assert "dtype=bfloat16" in repr(enhancer)


@pytest.mark.parametrize("tile", ["auto", 24, None])
def test_bf16_is_close_to_fp32_with_fp32_outputs_in_every_tiling(sharp_net, tile):
    """bf16 convolutions (emulated where the CPU lacks them: the same rounding), streamed, tiled or whole."""
    image = torch.rand(3, 41, 53)
    want = plain(sharp_net, image[None])
    got = Enhancer(sharp_net, device="cpu", tile=tile, precision="bf16").decompose(image)
    outputs = (got.illumination, got.reflectance, got.denoised)
    for a, b in zip(outputs, want, strict=True):
        assert a.dtype == torch.float32 and a.shape == b.shape
        difference = (a - b).abs()
        # bf16 rounds each layer's input to 1/256 relative: it shows, and sharp_net's 4x weights amplify
        # it to some grey levels at most (the official net: 3, README)
        assert 1e-4 < difference.max() < 16 / 255 and difference.mean() < 1 / 255
    # the sigmoid outputs are computed in fp32, not rounded to bf16's 8 bits
    assert (got.illumination.bfloat16().float() != got.illumination).any()


def test_bf16_bands_equal_bf16_whole_images(sharp_net, monkeypatch):
    """Bands and zero padding inside the convolution compute the same bf16 layers as one whole-image pass."""
    from pairlie.infer import streaming

    monkeypatch.setattr(streaming, "BF16_BAND_ROWS", 6)  # bands of 6 rows, context trimmed layer by layer
    monkeypatch.setattr(streaming, "BF16_BAND_PIXELS", 1)
    image = torch.rand(3, 40, 50)
    enhancer = Enhancer(sharp_net, device="cpu", precision="bf16")
    assert "bands" in repr(enhancer)
    calls = []
    original = streaming.banded
    monkeypatch.setattr(streaming, "banded", lambda *args: calls.append(args[1].shape) or original(*args))
    streamed = enhancer.decompose(image)
    assert calls == [(1, 3, 40, 50)]
    whole = Enhancer(sharp_net, device="cpu", tile=None, precision="bf16").decompose(image)
    for a, b in ((streamed.illumination, whole.illumination), (streamed.reflectance, whole.reflectance)):
        # the same bf16 inputs to every layer, up to an accumulation order that may flip a last bit
        assert (a - b).abs().max() < 2 / 255


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp64"}, "precision='fp64': must be one of auto, fp32, bf16, fp16, int8"),
        ({"precision": "fp16"}, "precision=fp16 needs a GPU"),
        ({"half": True}, "half=true needs a GPU"),
        ({"half": True, "precision": "bf16"}, "half=true and precision=bf16: half=true means precision=fp16"),
        ({"precision": "bf16", "conv": "winograd"}, "conv=winograd computes in fp32 only"),
        ({"precision": "int8"}, "precision=int8 needs int8 dot-product instructions"),
    ],
)
def test_bad_precisions_are_one_line_naming_the_key(sharp_net, kwargs, message):
    with pytest.raises(ConfigError) as error:
        Enhancer(sharp_net, device="cpu", **kwargs)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_bf16_training_is_noted_as_slow_only_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, AVX2)
    note = precision.bf16_training_note("bf16-mixed")
    assert note is not None and "~50x slower" in note and "trainer.precision=bf16-mixed" in note
    assert precision.bf16_training_note("32-true") is None
    monkeypatch.setenv(precision.FLAGS_VARIABLE, ZEN4)
    assert precision.bf16_training_note("bf16-mixed") is None


def test_validation_precision_is_checked_and_used(sharp_net):
    from pairlie.train.module import PairLIEModule

    with pytest.raises(ConfigError, match=r"^model.val_precision='half': must be one of"):
        PairLIEModule(width=8, val_precision="half")
    with pytest.raises(ConfigError, match=r"^model.val_precision=int8: validation runs fp32 or bf16; score int8"):
        PairLIEModule(width=8, val_precision="int8")
    assert PairLIEModule(width=8).hparams.val_precision == "fp32"


def _scores(enhancer, folder, step):
    from pairlie.evaluate.scoring import evaluate

    pairs = [(low, folder / "high" / low.name) for low in sorted((folder / "low").iterdir())[::step]]
    result = evaluate(enhancer, pairs, save_images=False, no_reference=False)  # pairlie-test's scoring
    return result.mean("psnr"), result.mean("ssim"), len(pairs)


def _exact_scores(folder: str, gamma: float, step: int) -> tuple[float, float, int]:
    """The fp32 exact path's scores: one pass per data set for the bf16, int8 and Winograd tests (helpers.exact_pass)."""
    return exact_scores(folder, step, gamma)


QUALITY_SETS = [("LOL-test", 0.14, 1, 15), ("SICE-test", 0.2, 10, 15)]  # all of LOL-test, every 10th SICE-test


@pytest.mark.xdist_group("exact_pass")  # one worker computes helpers.exact_pass once for all
@pytest.mark.slow
@RunIf(shared=True)
@pytest.mark.skipif(not precision.native_bf16(), reason="this CPU emulates bf16 (~50x slower); numerics tested above")
@pytest.mark.parametrize(("folder", "gamma", "step", "count"), QUALITY_SETS)
def test_bf16_scores_within_0_01_db_and_0_002_ssim_of_fp32(folder, gamma, step, count):
    """The official weights (minutes on a 2-core CPU)."""
    fast = Enhancer.from_checkpoint(OFFICIAL_WEIGHTS, gamma=gamma, device="cpu", precision="bf16")
    psnr, ssim, n = _exact_scores(folder, gamma, step)
    psnr16, ssim16, _ = _scores(fast, SHARED_DATA / folder, step)
    assert n == count and fast.dtype == torch.bfloat16
    assert abs(psnr16 - psnr) <= 0.01 and abs(ssim16 - ssim) <= 0.002, (psnr, psnr16, ssim, ssim16)


@pytest.mark.xdist_group("exact_pass")  # one worker computes helpers.exact_pass once for all
@pytest.mark.slow
@RunIf(shared=True)
@pytest.mark.skipif(not REAL_INT8, reason="this CPU has no int8 dot products (VNNI/AMX): pairlie refuses int8 on it")
@pytest.mark.parametrize(("folder", "gamma", "step", "count"), QUALITY_SETS)
def test_int8_scores_within_0_05_db_and_0_003_ssim_of_fp32(monkeypatch, folder, gamma, step, count):
    """The official weights, calibrated on 12 training images (never test images)."""
    monkeypatch.setenv(precision.FLAGS_VARIABLE, SAPPHIRE_RAPIDS)
    calibration = sorted((SHARED_DATA / "LOL-train-subset").rglob("*.png"))[::2][:6]
    calibration += sorted((SHARED_DATA / "SICE-train").rglob("*.JPG"))[::60][:6]
    fast = Enhancer.from_checkpoint(
        OFFICIAL_WEIGHTS, gamma=gamma, device="cpu", precision="int8", calibration=calibration
    )
    psnr, ssim, n = _exact_scores(folder, gamma, step)
    psnr8, ssim8, _ = _scores(fast, SHARED_DATA / folder, step)
    assert n == count and fast.int8.calibrated == 12
    assert abs(psnr8 - psnr) <= 0.05 and abs(ssim8 - ssim) <= 0.003, (psnr, psnr8, ssim, ssim8)


def test_the_relu_fused_into_bf16_convolutions_changes_nothing(sharp_net, monkeypatch):
    """The fused oneDNN call (where its probe passes) computes what conv2d then ReLU compute."""
    from pairlie.infer import streaming

    if not precision.fuses_relu(torch.bfloat16):
        pytest.skip(f"no fused convolution here: {precision._fused_relu_reason()}")
    assert not precision.fuses_relu(torch.float32)  # fp32 stays today's exact path
    monkeypatch.setattr(streaming, "BF16_BAND_ROWS", 8)  # several bands, trimmed context and rings
    monkeypatch.setattr(streaming, "BF16_BAND_PIXELS", 1)
    image = torch.rand(3, 37, 50)
    enhancer = Enhancer(sharp_net, device="cpu", precision="bf16")
    fused = enhancer.decompose(image)
    monkeypatch.setattr(precision, "fuses_relu", lambda dtype: False)
    separate = enhancer.decompose(image)
    for a, b in ((fused.illumination, separate.illumination), (fused.reflectance, separate.reflectance)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_fp32_runs_in_bands_with_fused_relus_on_an_avx2_cpu_only(sharp_net, monkeypatch):
    """AVX2 (conftest's flags): bands, the ReLUs fused; AVX-512 CPUs and a failed probe keep the row stream."""
    if reason := precision._fused_relu_reason(torch.float32):
        pytest.skip(f"no fused fp32 convolution here: {reason}")
    assert precision.fp32_bands()
    assert "bands" in repr(Enhancer(sharp_net, device="cpu", precision="fp32", conv="direct"))
    if winograd.unavailable_reason() is None:  # NNPACK reads NCHW rows: Winograd keeps the row stream
        assert "streamed rows" in repr(Enhancer(sharp_net, device="cpu", precision="fp32", conv="winograd"))
    for flags in (ZEN4, "avx2 avx512f avx512_vnni"):  # Zen 4, Ice Lake: the row stream, measured as fast there
        monkeypatch.setenv(precision.FLAGS_VARIABLE, flags)
        assert not precision.fp32_bands()
        assert "streamed rows" in repr(Enhancer(sharp_net, device="cpu", precision="fp32", conv="direct"))
    monkeypatch.setenv(precision.FLAGS_VARIABLE, AVX2)
    monkeypatch.setattr(precision, "_fused_relu_reason", lambda dtype=None: "oneDNN's fused convolution failed: test")
    assert not precision.fp32_bands()
    assert "streamed rows" in repr(Enhancer(sharp_net, device="cpu", precision="fp32", conv="direct"))


def test_fp32_bands_with_fused_relus_compute_the_same_numbers(sharp_net, monkeypatch):
    """Fused and separate ReLUs bit for bit, in several bands with trimmed context; the plain net to float rounding.

    Two images: torch computes small fp32 convolutions of one image through another kernel than oneDNN's.
    """
    from pairlie.infer import streaming

    if not precision.fp32_bands():
        pytest.skip(f"no fused fp32 convolution here: {precision._fused_relu_reason(torch.float32)}")
    monkeypatch.setattr(streaming, "BF16_BAND_ROWS", 8)
    monkeypatch.setattr(streaming, "BF16_BAND_PIXELS", 1)
    image = torch.rand(2, 3, 37, 50)
    enhancer = Enhancer(sharp_net, device="cpu", precision="fp32", conv="direct")
    assert enhancer.banded
    fused = enhancer.decompose(image)
    monkeypatch.setattr(precision, "fp32_bands", lambda: False)  # the same bands, ReLUs after the convolutions
    separate = enhancer.decompose(image)
    want = plain(sharp_net, image)
    for a, b, c in zip(
        (fused.illumination, fused.reflectance, fused.denoised),
        (separate.illumination, separate.reflectance, separate.denoised),
        want,
        strict=True,
    ):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-5)
