"""Paper-protocol PSNR/SSIM against scikit-image and hand computation."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from helpers import SHARED_DATA, RunIf
from pairlie.evaluate.metrics import paper_scores, psnr, ssim, to_reference_grid
from pairlie.io.images import read_rgb


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


@pytest.mark.parametrize("size", [(20, 30), (40, 60)], ids=["resized", "same-size"])
def test_paper_scores_are_scikit_image_s_on_the_truncated_resized_image(size):
    """The protocol step by step, independently: truncate x·255, resize with PIL's bicubic, score with scikit-image."""
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((3, *size), dtype=np.float32))
    ref = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    truncated = np.floor(image.numpy().transpose(1, 2, 0) * np.float32(255)).astype(np.uint8)
    expected = np.asarray(Image.fromarray(truncated).resize((60, 40), Image.Resampling.BICUBIC))
    assert np.array_equal(to_reference_grid(image, ref), expected)
    got_psnr, got_ssim = paper_scores(image, ref)
    assert got_psnr == pytest.approx(peak_signal_noise_ratio(ref, expected, data_range=255), abs=1e-9)
    assert got_ssim == pytest.approx(reference_ssim(expected, ref), abs=1e-12)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one size"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
