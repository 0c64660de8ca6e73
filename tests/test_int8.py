"""precision=int8: N's and L's ReLU layers in oneDNN's int8 convolutions, calibrated; their last layers and R in bf16.

conftest.py makes every test see an AVX2-only CPU; these set the flags of a CPU with int8 dot
products. The numerics run only where this machine really has them: without VNNI/AMX oneDNN's
int8 sums can saturate, which is why pairlie refuses int8 there.
"""

import json

import numpy as np
import pytest
import torch

from helpers import make_paired_tree, run_cli, write_image
from pairlie.errors import ConfigError
from pairlie.infer import int8, precision, streaming
from pairlie.infer.enhancer import Enhancer
from pairlie.model.nets import ConvNet, PairLIENet

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = "avx2 avx512f avx512_vnni avx_vnni amx_bf16 amx_int8 amx_tile"
ICE_LAKE = "avx2 avx512f avx512_vnni"  # int8 dot products, bf16 emulated
REAL_INT8 = any(flag in precision._cpuinfo()[1] for flag in precision.INT8_FLAGS)
needs_int8 = pytest.mark.skipif(
    not REAL_INT8, reason="this CPU has no int8 dot products (VNNI/AMX): pairlie refuses int8 on it (tested below)"
)


@pytest.fixture
def int8_cpu(monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, SAPPHIRE_RAPIDS)


def dark_images(count=3, size=(40, 52)):
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, *size, generator=generator) * 0.3 for _ in range(count)]


def test_int8_is_refused_on_a_cpu_without_int8_dot_products(sharp_net):
    with pytest.raises(ConfigError) as error:  # conftest: an AVX2-only CPU
        Enhancer(sharp_net, device="cpu", precision="int8", calibration=dark_images())
    assert str(error.value).startswith("precision=int8 needs int8 dot-product instructions (avx512_vnni, amx_int8")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "flags",
    [
        "fpu sse sse4_2 avx avx2 fma f16c",  # Haswell to Comet Lake, Zen 1-3: AVX2 only
        "avx2 avx512f avx512bw avx512dq avx512vl",  # Skylake-SP: AVX-512 without VNNI
    ],
)
def test_int8_is_refused_in_one_line_without_vnni_or_amx(sharp_net, monkeypatch, flags):
    """On AVX2, 7-bit int8 measured 1.2x fp32 and outside the quality bounds (docs/benchmark.md): refused."""
    monkeypatch.setenv(precision.FLAGS_VARIABLE, flags)
    with pytest.raises(ConfigError) as error:
        Enhancer(sharp_net, device="cpu", precision="int8", calibration=dark_images())
    assert str(error.value) == (
        "precision=int8 needs int8 dot-product instructions (avx512_vnni, amx_int8, avx_vnni in /proc/cpuinfo), "
        "which this CPU lacks (without them int8 measured too slow and too lossy to pay); use precision=fp32"
    )


def test_pairlie_enhance_refuses_int8_on_an_avx2_cpu_in_one_line(tmp_path, tiny_ckpt):
    write_image(tmp_path / "photos" / "a.png", (40, 30), scale=0.3)
    result = run_cli(
        "pairlie-enhance", f"ckpt_path={tiny_ckpt}", f"input={tmp_path / 'photos'}", f"output={tmp_path / 'out'}",
        "precision=int8", cwd=tmp_path, env={precision.FLAGS_VARIABLE: "avx avx2 fma"},
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    assert "precision=int8 needs int8 dot-product instructions" in result.stderr
    assert "use precision=fp32" in result.stderr and not (tmp_path / "out").exists()


def test_auto_never_picks_int8(monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, "avx2 avx_vnni amx_int8")  # int8, no native bf16
    assert precision.resolve("auto", CPU) == "fp32"
    monkeypatch.setenv(precision.FLAGS_VARIABLE, SAPPHIRE_RAPIDS)
    assert precision.resolve("auto", CPU) == "bf16"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "precision=int8 needs calibration images: a folder or a few photos"),
        ({"tile": 32, "calibration": []}, "precision=int8 computes in bands of rows: use tile=auto, not tile=32"),
        ({"tile": None, "calibration": []}, "precision=int8 computes in bands of rows: use tile=auto, not tile=null"),
        ({"calibration": []}, "calibration: no readable images"),
        ({"calibration": ["nowhere.png"]}, "calibration=nowhere.png: no such file or folder"),
        ({"calibration": [3]}, "calibration: cannot read a int"),
        ({"conv": "winograd"}, "conv=winograd computes in fp32 only"),
    ],
)
def test_int8_mistakes_are_one_line(sharp_net, int8_cpu, monkeypatch, kwargs, message):
    monkeypatch.setattr(int8, "unavailable", lambda: None)  # the refusals, whatever this CPU computes
    with pytest.raises(ConfigError) as error:
        Enhancer(sharp_net, device="cpu", precision="int8", **kwargs)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_int8_runs_the_papers_nets_only(int8_cpu, monkeypatch):
    monkeypatch.setattr(int8, "unavailable", lambda: None)
    deeper = PairLIENet(width=8, reflectance=ConvNet(3, 3, width=8, depth=6))  # still the paper's blocks: fine
    assert int8.unfit(deeper) is None
    relu_out = PairLIENet(width=8, illumination_output="relu")
    with pytest.raises(
        ConfigError, match=r"^precision=int8: it needs ReLU layers and a sigmoid output in illumination"
    ):
        Enhancer(relu_out, device="cpu", precision="int8", calibration=dark_images())
    zeros = PairLIENet(width=8, padding="zeros")
    with pytest.raises(ConfigError, match=r"^precision=int8: it runs the paper's nets only"):
        Enhancer(zeros, device="cpu", precision="int8", calibration=dark_images())


def test_int8_needs_relu_layers_in_n_and_l(int8_cpu, monkeypatch):
    monkeypatch.setattr(int8, "unavailable", lambda: None)
    shallow = PairLIENet(width=8, illumination=ConvNet(3, 1, width=8, depth=0))
    with pytest.raises(
        ConfigError, match=r"^precision=int8: it needs ReLU layers and a sigmoid output in illumination"
    ):
        Enhancer(shallow, device="cpu", precision="int8", calibration=dark_images())


def test_calibration_with_another_precision_is_refused(sharp_net):
    with pytest.raises(
        ConfigError, match=r"^calibration: only precision=int8 uses calibration images; this runs fp32$"
    ):
        Enhancer(sharp_net, device="cpu", precision="fp32", calibration=dark_images())


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (np.zeros((8, 9), np.uint8), "calibration: expected uint8 or uint16 HxWx3 arrays, got uint8 (8, 9)"),
        (np.zeros((8, 9, 4), np.uint8), "calibration: expected uint8 or uint16 HxWx3 arrays, got uint8 (8, 9, 4)"),
        (np.zeros((8, 9, 3), np.float32), "calibration: expected uint8 or uint16 HxWx3 arrays, got float32"),
        (torch.rand(8, 9, 3), "calibration: expected float 3xHxW or Nx3xHxW tensors, got torch.float32 (8, 9, 3)"),
    ],
)
def test_calibration_images_of_the_wrong_kind_are_one_line(item, message):
    with pytest.raises(ConfigError) as error:
        int8.calibration_images([item])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_calibration_crops_pads_and_spreads(tmp_path):
    crops = int8.calibration_images([torch.rand(2, 3, 1, 600), torch.rand(3, 300, 5)])
    assert [tuple(c.shape) for c in crops] == [(3, 2, 256), (3, 2, 256), (3, 256, 5)]  # a batch is its images
    assert int8.spread(list(range(30))) == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]
    assert int8.spread(list(range(5))) == [0, 1, 2, 3, 4]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^calibration=.*empty: no images pairlie reads in this folder or below$"):
        int8.calibration_images(tmp_path / "empty")


@needs_int8
def test_onednn_int8_convolution_equals_its_float_reference():
    assert int8.unavailable() is None


@needs_int8
def test_int8_is_close_to_fp32_and_quantised(sharp_net, int8_cpu):
    images = dark_images()
    enhancer = Enhancer(sharp_net, device="cpu", precision="int8", calibration=images)
    assert enhancer.precision == "int8" and "precision='int8'" in repr(enhancer) and enhancer.int8.calibrated == 3
    scales = [layer.scale for layer in enhancer.int8.layers["denoiser"]]
    assert scales[0] == int8.UNIT_SCALE and all(s > 0 for s in scales)
    image = dark_images(1, (45, 61))[0]
    got = enhancer.decompose(image)
    with torch.no_grad():
        want = sharp_net(image[None])
    for a, b in zip((got.illumination, got.reflectance, got.denoised), want, strict=True):
        difference = (a - b).abs()
        # 8-bit activations through 4x weights: some grey levels, never a different picture
        assert 1e-3 < difference.max() < 48 / 255 and difference.mean() < 4 / 255
    assert got.illumination.dtype == torch.float32


@needs_int8
def test_int8_bands_equal_one_band(sharp_net, int8_cpu, monkeypatch):
    """Bands, column pieces and trimmed context compute the same int8 layers as one band."""
    enhancer = Enhancer(sharp_net, device="cpu", precision="int8", calibration=dark_images())
    image = dark_images(1, (40, 70))[0]
    whole = enhancer.decompose(image)
    monkeypatch.setattr(streaming, "BF16_BAND_ROWS", 6)
    monkeypatch.setattr(streaming, "BF16_BAND_PIXELS", 1)
    monkeypatch.setattr(streaming, "STREAM_WIDTH", 32)
    banded = enhancer.decompose(image)
    for a, b in ((banded.illumination, whole.illumination), (banded.reflectance, whole.reflectance)):
        # integer sums are exact; a bf16 accumulation order may flip a last bit
        assert (a - b).abs().max() < 2 / 255


@needs_int8
def test_int8_on_a_cpu_without_native_bf16_runs_r_in_fp32(sharp_net, monkeypatch):
    monkeypatch.setenv(precision.FLAGS_VARIABLE, ICE_LAKE)
    enhancer = Enhancer(sharp_net, device="cpu", precision="int8", calibration=dark_images())
    assert enhancer.dtype == torch.float32  # emulated bf16 would be ~50x slower
    out = enhancer.decompose(dark_images(1)[0])
    assert torch.isfinite(out.enhanced).all()


def test_calibration_takes_paths_folders_and_arrays_and_passes_over_broken_files(tmp_path):
    for k in range(20):
        write_image(tmp_path / "photos" / f"scene{k:02d}" / "a.png", (20, 16), seed=k)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    images = int8.calibration_images(tmp_path / "photos")
    assert len(images) == int8.CALIBRATION_IMAGES and all(i.shape == (3, 16, 20) for i in images)
    scenes = [sorted((tmp_path / "photos").rglob("*.png"))[i] for i in range(21)]  # broken.png first: its stand-in
    listed = int8.calibration_images(scenes)
    assert len(listed) == int8.CALIBRATION_IMAGES
    array = (np.random.default_rng(0).random((8, 9, 3)) * 255).astype(np.uint8)
    mixed = int8.calibration_images([tmp_path / "photos" / "broken.png", array, torch.rand(3, 5, 6)])
    assert [tuple(i.shape) for i in mixed] == [(3, 8, 9), (3, 5, 6)]


@needs_int8
def test_pairlie_enhance_calibrates_on_its_inputs_and_pairlie_test_on_a_folder(tmp_path, tiny_ckpt):
    env = {precision.FLAGS_VARIABLE: SAPPHIRE_RAPIDS}
    photos = tmp_path / "photos"
    for k in range(3):
        write_image(photos / f"{k}.png", (40, 30), seed=k, scale=0.3)
    enhanced = run_cli(
        "pairlie-enhance", f"ckpt_path={tiny_ckpt}", f"input={photos}", f"output={tmp_path / 'out'}",
        "precision=int8", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert enhanced.returncode == 0, enhanced.stderr[-2000:]
    assert "(gamma 0.2, int8, calibrated on 3 image(s))" in enhanced.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    data = make_paired_tree(tmp_path / "pairs", names=("x.png",))
    common = (f"ckpt_path={tiny_ckpt}", f"data.test_dir={data}", "noref=false", "lpips=false", "precision=int8")
    scored = run_cli(
        "pairlie-test", *common, f"calibration={photos}", f"hydra.run.dir={tmp_path / 'ok'}", cwd=tmp_path, env=env
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["precision"] == "int8" and metrics["calibration"] == {"source": str(photos), "images": 3}
    assert f"direct convolutions, int8 calibrated on 3 image(s) of {photos}" in scored.stdout
