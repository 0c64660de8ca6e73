"""Enhancer: tiled equals whole-image inference, every input kind round-trips, odd sizes work."""

from itertools import pairwise

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import OFFICIAL_WEIGHTS, SHARED_DATA, RunIf
from pairlie.errors import ConfigError
from pairlie.infer.enhancer import Enhancer, split
from pairlie.io.images import load_image, quantize
from pairlie.model.checkpoints import load_net
from pairlie.model.nets import enhance


@pytest.mark.parametrize("tile", [16, 24, 50, None])
def test_tiled_fast_path_equals_the_plain_network_on_odd_sizes(sharp_net, tile):
    """The CPU path (zero-padded convs with reflected border rings, tiles with exactly the receptive
    radius of context) against the plain nn.Sequential with ReflectionPad2d on the whole image.
    conv=direct: the exact path; tests/test_winograd.py compares the Winograd one with it."""
    image = torch.rand(3, 67, 93)
    with torch.no_grad():
        illumination, reflectance, denoised = sharp_net(image[None])
    plain = (illumination, reflectance, denoised, enhance(illumination, reflectance, 0.2))
    fast = Enhancer(sharp_net, tile=tile, device="cpu", conv="direct").decompose(image)
    assert fast.illumination.shape == (1, 1, 67, 93)
    for a, b in zip(plain, (fast.illumination, fast.reflectance, fast.denoised, fast.enhanced), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("length", "tile"), [(600, 200), (400, 200), (1080, 200), (17, 16), (16, 16), (5, 16)])
def test_split_covers_the_length_in_equal_pieces_no_larger_than_the_tile(length, tile):
    pieces = split(length, tile, 10)
    assert pieces[0][0] == 0 and pieces[-1][1] == length
    assert all(a[1] == b[0] for a, b in pairwise(pieces))
    sizes = [end - start for start, end, _, _ in pieces]
    assert max(sizes) <= tile and max(sizes) - min(sizes) <= 1
    assert all(
        ctx_start == max(start - 10, 0) and ctx_end == min(end + 10, length)
        for start, end, ctx_start, ctx_end in pieces
    )


def test_too_little_overlap_is_visible_and_refused(sharp_net):
    image = torch.rand(3, 64, 64)
    whole = Enhancer(sharp_net, tile=None, device="cpu").decompose(image).enhanced
    short = Enhancer(sharp_net, tile=16, device="cpu")
    short.overlap = 2  # bypass the check to show why it exists
    assert (short.decompose(image).enhanced - whole).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="receptive radius"):
        Enhancer(sharp_net, overlap=4, device="cpu")


@RunIf(shared=True)
def test_tiled_official_model_within_one_grey_level_of_the_plain_network_on_a_real_odd_image():
    image = load_image(SHARED_DATA / "LOL-test" / "low" / "55.png")[:, :201, :299]
    enhancer = Enhancer.from_checkpoint(OFFICIAL_WEIGHTS, gamma=0.14, tile=64, device="cpu")
    net, _ = load_net(OFFICIAL_WEIGHTS)
    with torch.no_grad():
        illumination, reflectance, _ = net.eval()(image[None])
    plain = quantize(enhance(illumination, reflectance, 0.14)[0])
    diff = np.abs(plain.astype(int) - quantize(enhancer.enhance(image)).astype(int))
    assert diff.max() <= 1


def test_input_kinds_round_trip(sharp_net):
    enhancer = Enhancer(sharp_net, gamma=0.2, device="cpu")
    arr = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    out = enhancer.enhance(arr)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    expected = enhance(*sharp_net(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255)[:2], 0.2)
    assert np.abs(out.astype(int) - quantize(expected[0].detach()).astype(int)).max() <= 1
    pil = enhancer.enhance(Image.fromarray(arr))
    assert isinstance(pil, Image.Image) and pil.size == (30, 20) and pil.mode == "RGB"
    rgba = Image.fromarray(arr).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((20, 30), 77, np.uint8)))
    kept = enhancer.enhance(rgba)
    assert kept.mode == "RGBA" and np.asarray(kept)[..., 3].tolist() == np.full((20, 30), 77).tolist()
    tensor = torch.rand(3, 20, 30, dtype=torch.float64)
    assert enhancer.enhance(tensor).shape == (3, 20, 30) and enhancer.enhance(tensor).dtype == torch.float64
    assert enhancer.enhance(torch.rand(2, 3, 20, 30)).shape == (2, 3, 20, 30)
    with pytest.raises(TypeError, match="cannot enhance a list"):
        enhancer.enhance([1, 2])


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 4, 500), (3, 1, 37)])
def test_degenerate_sizes(sharp_net, shape):
    out = Enhancer(sharp_net, device="cpu", tile=16).decompose(torch.rand(shape))
    assert out.enhanced.shape == (1, *shape)


def test_gamma_comes_from_the_checkpoint_unless_given(tiny_ckpt):
    assert Enhancer.from_checkpoint(tiny_ckpt, device="cpu").gamma == 0.2
    assert Enhancer.from_checkpoint(tiny_ckpt, gamma=0.14, device="cpu").gamma == 0.14


def test_bad_settings_are_refused(sharp_net):
    with pytest.raises(ConfigError, match="model.gamma"):
        Enhancer(sharp_net, gamma=-1, device="cpu")
    with pytest.raises(ConfigError, match="half=true needs a GPU"):
        Enhancer(sharp_net, half=True, device="cpu")
    with pytest.raises(ConfigError, match="device='tpu'"):
        Enhancer(sharp_net, device="tpu")


def test_the_caller_s_net_is_left_as_it_was(sharp_net):
    """Item 8: the Enhancer works on a copy; the caller's net keeps its mode, layout and weights."""
    sharp_net.train()
    before = {k: (v.clone(), v.stride()) for k, v in sharp_net.state_dict().items()}
    enhancer = Enhancer(sharp_net, device="cpu")
    enhancer.enhance(torch.rand(3, 20, 20))
    assert sharp_net.training and enhancer.net is not sharp_net and not enhancer.net.training
    for key, value in sharp_net.state_dict().items():
        assert value.stride() == before[key][1]  # not turned channels-last
        torch.testing.assert_close(value, before[key][0], rtol=0, atol=0)


def test_copies_to_the_cpu_are_blocking(sharp_net, monkeypatch):
    """Item 11: a non-blocking GPU->CPU copy is read before it lands; only copies towards a GPU may be async."""
    calls = []
    original = torch.Tensor.to
    monkeypatch.setattr(
        torch.Tensor, "to", lambda t, *a, **k: calls.append(k.get("non_blocking")) or original(t, *a, **k)
    )
    for tile in ("auto", 16):
        Enhancer(sharp_net, device="cpu", tile=tile).enhance(torch.rand(3, 30, 30))
    assert calls and not any(calls)
    from pairlie.infer.enhancer import to_device

    tensor = torch.rand(2)
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: k)
    assert to_device(tensor, torch.device("cuda", 0), torch.float16) == {"non_blocking": True}
    assert to_device(tensor, torch.device("cpu"), torch.float32) == {"non_blocking": False}


def test_a_gpu_index_past_the_gpu_count_is_one_line(monkeypatch):
    from pairlie.infer.enhancer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"^device=cuda:2: this machine has 2 GPU\(s\), cuda:0 to cuda:1; pick one"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="device='cuda:x'"):
        resolve_device("cuda:x")


def test_a_gpu_runs_the_net_in_nchw(sharp_net, monkeypatch):
    """Item 15: CUDA's ReflectionPad2d is NCHW-only, so channels-last would copy each feature map twice per layer."""
    formats = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.nn.Module, "to", lambda net, *a, **k: formats.append(k["memory_format"]) or net)
    Enhancer(sharp_net, device="cuda")
    Enhancer(sharp_net, device="cpu", conv="direct")
    Enhancer(sharp_net, device="cpu", conv="winograd")  # NNPACK reads NCHW
    assert formats == [torch.contiguous_format, torch.channels_last, torch.contiguous_format]


def test_mps_is_accepted_where_pytorch_reports_it_and_tiles_like_cuda(monkeypatch):
    from pairlie.infer.enhancer import AUTO_TILE, resolve_device

    assert AUTO_TILE["mps"] == AUTO_TILE["cuda"]
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device("auto").type != "mps"  # auto stays CUDA-or-CPU: MPS only when asked
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device=mps: PyTorch reports no Apple GPU \(MPS\) here; use device=cpu"):
        resolve_device("mps")


@RunIf(mps=True)
def test_mps_enhances_like_the_cpu_in_tiles(sharp_net):
    image = torch.rand(1, 3, 70, 90)
    on_mps = Enhancer(sharp_net, device="mps", tile=32)
    assert on_mps.device.type == "mps" and on_mps.tile == 32 and not on_mps.stream
    assert Enhancer(sharp_net, device="mps").tile == 1024
    expected = Enhancer(sharp_net, device="cpu", tile=None).decompose(image).enhanced
    assert (on_mps.decompose(image).enhanced - expected).abs().max() < 1e-4
