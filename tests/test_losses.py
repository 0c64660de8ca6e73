"""Every loss term against values worked out by hand on tiny tensors."""

import pytest
import torch

from pairlie.losses import (
    LossWeights,
    consistency_loss,
    fidelity_loss,
    pairlie_losses,
    retinex_loss,
    tv_loss,
)


def full(value, channels=3):
    return torch.full((1, channels, 3, 3), value)


def test_tv_is_mean_abs_difference_two_pixels_apart_along_h_plus_w():
    illumination = torch.arange(9.0).reshape(1, 1, 3, 3)
    # rows 0 and 2 differ by 6 everywhere; columns 0 and 2 by 2 everywhere
    assert tv_loss(illumination).item() == pytest.approx(6.0 + 2.0)


def test_consistency_and_fidelity_are_mse():
    assert consistency_loss(full(0.0), full(0.5)).item() == pytest.approx(0.25)
    assert fidelity_loss(full(1.0), full(0.5)).item() == pytest.approx(0.25)


def test_retinex_terms_by_hand():
    illumination, reflectance, denoised = full(0.5, 1), full(0.4), full(0.3)
    im = torch.cat([full(0.1, 1), full(0.6, 1), full(0.2, 1)], dim=1)  # max over RGB = 0.6
    # (0.2 - 0.3)^2 + (0.4 - 0.6)^2 + (0.5 - 0.6)^2 + TV 0
    assert retinex_loss(illumination, reflectance, im, denoised).item() == pytest.approx(0.01 + 0.04 + 0.01)


def test_retinex_detaches_illumination_in_the_reflectance_target():
    illumination = full(0.5, 1).requires_grad_()
    im = torch.cat([full(0.1, 1), full(0.6, 1), full(0.2, 1)], dim=1)
    retinex_loss(illumination, full(0.4), im, full(0.3)).backward()
    # d/dL of MSE(L*R, X) over 27 values: 3 * 2 * (-0.1) * 0.4 / 27; of MSE(L, max_rgb) over 9: 2 * (-0.1) / 9.
    # Without the detach, MSE(R, X / L) would add 3 * 2 * (-0.2) * (0.3 / 0.25) / 27 = -1.44 / 27.
    expected = (-0.24 - 0.6) / 27
    assert torch.allclose(illumination.grad, torch.full_like(illumination, expected))


def test_total_is_weighted_sum():
    weights = LossWeights(consistency=2.0, retinex=3.0, fidelity=500.0)
    im = full(0.6)
    terms = pairlie_losses(full(0.5, 1), full(0.4), full(0.3), full(0.2), im, weights)
    assert terms["consistency"].item() == pytest.approx(0.04)
    assert terms["fidelity"].item() == pytest.approx(0.09)
    assert terms["retinex"].item() == pytest.approx(0.01 + 0.04 + 0.01)
    assert terms["total"].item() == pytest.approx(2 * 0.04 + 3 * 0.06 + 500 * 0.09)


def test_paper_weights_are_the_default():
    assert LossWeights() == LossWeights(consistency=1.0, retinex=1.0, fidelity=500.0)


def test_negative_weight_is_refused_with_the_key():
    with pytest.raises(ValueError, match="model.loss.fidelity"):
        LossWeights(fidelity=-1.0)
