"""Paper-protocol PSNR/SSIM against scikit-image and hand computation."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from helpers import SHARED_DATA, RunIf
from pairlie.images import read_rgb
from pairlie.metrics import paper_scores, psnr, ssim, to_reference_grid


def reference_ssim(a, b):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=2, data_range=255
    )


def test_psnr_by_hand():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(a, a) == float("inf")


@pytest.mark.parametrize("shape", [(32, 32, 3), (41, 57, 3)])
def test_ssim_matches_scikit_image_valid_region(shape):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(reference_ssim(a, b), abs=1e-12)


@RunIf(shared=True)
def test_ssim_matches_scikit_image_on_real_images():
    a = read_rgb(SHARED_DATA / "reference-outputs" / "PairLIE" / "LOL-test" / "I" / "22.png")[0]
    b = read_rgb(SHARED_DATA / "LOL-test" / "high" / "22.png")[0]
    assert ssim(a, b) == pytest.approx(reference_ssim(a, b), abs=1e-12)


def test_quantisation_truncates():
    image = torch.tensor([0.999, 0.5, 1.2]).reshape(3, 1, 1).expand(3, 2, 2)
    ref = np.zeros((2, 2, 3), np.uint8)
    assert to_reference_grid(image, ref)[0, 0].tolist() == [254, 127, 255]


def test_enhanced_is_resized_to_the_reference():
    image = torch.rand(3, 20, 30)
    ref = np.zeros((40, 60, 3), np.uint8)
    assert to_reference_grid(image, ref).shape == (40, 60, 3)
    scores = paper_scores(image, ref)
    assert all(np.isfinite(scores))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one size"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
