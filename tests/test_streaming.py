"""The CPU paths compute what PairLIENet.forward computes: streamed rows and zero-padded convs with reflected rings."""

import pytest
import torch

from pairlie.infer import streaming
from pairlie.infer.enhancer import Enhancer


def plain(net, image):
    with torch.no_grad():
        return net(image)


@pytest.mark.parametrize(
    ("height", "width", "band_pixels", "stream_width"),
    [
        (2, 5, 65536, 2048),  # the smallest image reflection padding allows
        (3, 7, 65536, 2048),
        (37, 51, 102, 2048),  # bands of 2 rows, many pushes
        (41, 30, 300, 2048),  # bands of 10 rows and a last band of 1 row
        (29, 70, 500, 32),  # column pieces with context, streamed in bands of 7 rows
    ],
)
def test_streamed_rows_equal_the_plain_network(sharp_net, monkeypatch, height, width, band_pixels, stream_width):
    monkeypatch.setattr(streaming, "BAND_PIXELS", band_pixels)
    monkeypatch.setattr(streaming, "STREAM_WIDTH", stream_width)
    image = torch.rand(2, 3, height, width)
    streamed = streaming.stream(sharp_net, image, torch.device("cpu"), torch.float32, margin=10)
    for got, want in zip(streamed, plain(sharp_net, image), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "rows", "stream_width"),
    [
        (2, 5, 256, 2048),  # one band, both borders: nothing trimmed
        (37, 51, 4, 2048),  # bands of 4 rows, each trimmed by 10 rows of context on inner sides
        (41, 30, 7, 2048),  # unequal bands
        (29, 70, 6, 32),  # column pieces with context, in bands
    ],
)
def test_bands_with_trimmed_context_equal_the_plain_network(sharp_net, monkeypatch, height, width, rows, stream_width):
    """The bf16 path's banding and trimming, held in fp32 to the exact path's tolerance."""
    monkeypatch.setattr(streaming, "BF16_BAND_ROWS", rows)
    monkeypatch.setattr(streaming, "BF16_BAND_PIXELS", 1)
    monkeypatch.setattr(streaming, "STREAM_WIDTH", stream_width)
    image = torch.rand(2, 3, height, width)
    banded = streaming.banded(sharp_net, image, torch.device("cpu"), torch.float32, margin=10)
    for got, want in zip(banded, plain(sharp_net, image), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="margin 9 is less than the nets' receptive radius 10"):
        streaming.banded(sharp_net, image, torch.device("cpu"), torch.float32, margin=9)


def test_zero_padded_convs_with_reflected_rings_equal_the_plain_network(sharp_net):
    image = torch.rand(1, 3, 23, 31).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = streaming.forward(sharp_net, image)
    for got, want in zip(fast, plain(sharp_net, image), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_inside_sides_skip_the_reflection_and_only_their_ring_differs(sharp_net):
    image = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        inner = streaming.forward(sharp_net, image, (True, True, True, False))[2]  # right side treated as inside
    want = plain(sharp_net, image)[2]
    # the denoiser has 5 layers: the wrong padding reaches 5 pixels in from the right edge, no further
    torch.testing.assert_close(inner[..., :-5], want[..., :-5], rtol=0, atol=1e-5)
    assert (inner[..., -1:] - want[..., -1:]).abs().max() > 1e-3


def test_the_enhancer_streams_on_a_cpu_by_default(sharp_net):
    enhancer = Enhancer(sharp_net, device="cpu")
    assert enhancer.stream
    image = torch.rand(3, 45, 61)
    out = enhancer.decompose(image)
    illumination, reflectance, denoised = plain(sharp_net, image[None])
    # conv=auto: Winograd's rounding where NNPACK runs (direct is held to 1e-5 above)
    torch.testing.assert_close(out.illumination, illumination, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.reflectance, reflectance, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.denoised, denoised, rtol=0, atol=1e-4)
