"""NIQE against MATLAB's published value and LOE on cases whose answer is known."""

import numpy as np
import pytest
from PIL import Image

from helpers import SHARED_DATA, RunIf
from pairlie.evaluate import noref

BABOON = SHARED_DATA / "niqe" / "baboon.png"
MATLAB_BABOON_NIQE = 5.72957338  # MATLAB R2021a niqe(baboon.png), as published with BasicSR


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image with smooth structure and noise, so that every NIQE block can be fitted."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(x / 7.0) * np.cos(y / 11.0)
    image = base[..., None] + rng.normal(0, 12, (height, width, 3))
    return image.clip(0, 255).astype(np.uint8)


@RunIf(shared=True)
def test_niqe_of_baboon_matches_matlab():
    image = np.asarray(Image.open(BABOON).convert("RGB"))
    assert noref.niqe(image) == pytest.approx(MATLAB_BABOON_NIQE, abs=1e-4)


def test_niqe_of_a_600x400_image_is_a_positive_score_and_repeatable():
    """The same image twice gives the same score (the model and tables are built once); speed is in the benchmark's remit, not a test's."""
    image = textured(400, 600)
    first = noref.niqe(image)
    assert np.isfinite(first) and first > 0
    assert noref.niqe(image) == first


def test_images_too_small_for_two_blocks_are_unscorable_with_the_reason():
    with pytest.raises(noref.Unscorable, match=r"150x96 holds 1 whole 96x96 block.*needs at least two"):
        noref.niqe(textured(96, 150))
    assert np.isfinite(noref.niqe(textured(96, 192)))
    flat = np.full((200, 200, 3), 90, np.uint8)
    with pytest.raises(noref.Unscorable, match="0 of 4 blocks have texture"):
        noref.niqe(flat)


def test_y_channel_is_matlab_rgb2ycbcr_rounded():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # 16 + (65.481 R + 128.553 G + 24.966 B) / 255, rounded: 81.481, 144.553, 40.966
    assert noref.y_channel(rgb).tolist() == [[16, 235, 81, 145, 41]]


def test_imresize_keeps_constants_and_reproduces_a_ramp_inside():
    assert np.allclose(noref.imresize(np.full((40, 30), 7.0), (20, 15)), 7.0)
    ramp = np.tile(np.arange(64, dtype=np.float64), (8, 1))
    half = noref.imresize(ramp, (4, 32))
    # MATLAB maps output column x (from 1) to input 2x - 0.5; the cubic kernel reproduces lines exactly
    inside = slice(4, 28)
    expected = 2 * np.arange(1, 33) - 0.5 - 1  # 0-based input coordinate = ramp value
    assert np.allclose(half[0, inside], expected[inside])


def test_aggd_fit_takes_the_nearest_grid_value_like_matlab_min():
    rng = np.random.default_rng(1)
    samples = rng.laplace(size=(20, 4000)) * rng.random((20, 1)) + rng.normal(size=(20, 4000))
    alpha, _, _ = noref.aggd_fit(samples)
    gam, ratio = noref._aggd_table()
    sq = samples**2
    left = np.sqrt((sq * (samples < 0)).sum(1) / (samples < 0).sum(1))
    right = np.sqrt((sq * (samples > 0)).sum(1) / (samples > 0).sum(1))
    g = left / right
    rnorm = np.abs(samples).mean(1) ** 2 / sq.mean(1) * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    assert np.array_equal(alpha, gam[np.argmin((ratio[None] - rnorm[:, None]) ** 2, axis=1)])


def test_loe_is_zero_for_identity_and_a_monotone_brightening():
    image = textured(120, 160)
    assert noref.loe(image, image) == 0
    # resized images: resizing is linear, so a doubling keeps every order (exactly, in binary floats)
    dark = image // 2
    assert noref.loe(dark, dark * 2) == 0
    # compared at full size (shorter side <= 50), any strictly increasing curve keeps every order
    # (one that merges two levels into one makes ties, which LOE counts)
    small = textured(40, 60).astype(np.int64) // 2
    curved = small + small * small // 127  # 0..127 -> 0..254, strictly increasing
    assert noref.loe(small.astype(np.uint8), curved.astype(np.uint8)) == 0


def test_loe_of_an_order_inversion_is_the_maximum():
    values = np.arange(120, dtype=np.uint8).reshape(10, 12) * 2  # 120 distinct lightness values
    image = np.repeat(values[..., None], 3, axis=2)
    # every pixel changes its order against all 119 others
    assert noref.loe(image, 255 - image) == 119


def test_loe_compares_at_a_shorter_side_of_50():
    assert noref.loe_shape(400, 600) == (50, 75)
    assert noref.loe_shape(600, 401) == (75, 50)
    assert noref.loe_shape(40, 60) == (40, 60)  # never enlarged
    image = textured(400, 600)
    assert noref.loe(image, 255 - image) > 1000  # on 50x75 = 3750 pixels
