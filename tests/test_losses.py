"""Every loss term against values worked out by hand on tiny tensors."""

import pytest
import torch

from pairlie.errors import ConfigError
from pairlie.model.losses import (
    Step,
    build_terms,
    consistency,
    consistency_loss,
    fidelity,
    fidelity_loss,
    retinex,
    retinex_loss,
    tv_loss,
    weighted_terms,
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


def paper_step(il1, r1, x1, r2, im1):
    """A Step holding the paper's tensors for one pair (the second exposure's image is unused by the paper's terms)."""
    step = Step([im1, im1], compute=None)
    for part, value in (("illumination", il1), ("reflectance", r1), ("denoised", x1)):
        step.put(0, part, value)
    step.put(1, "reflectance", r2)
    return step


def test_total_is_weighted_sum():
    terms = build_terms({"consistency": 2.0, "retinex": 3.0, "fidelity": 500.0})
    values = weighted_terms(paper_step(full(0.5, 1), full(0.4), full(0.3), full(0.2), full(0.6)), terms)
    assert values["consistency"].item() == pytest.approx(0.04)
    assert values["fidelity"].item() == pytest.approx(0.09)
    assert values["retinex"].item() == pytest.approx(0.01 + 0.04 + 0.01)
    assert values["total"].item() == pytest.approx(2 * 0.04 + 3 * 0.06 + 500 * 0.09)


def test_paper_weights_are_the_default():
    assert [(t.name, t.fn, t.weight) for t in build_terms(None)] == [
        ("consistency", consistency, 1.0),
        ("retinex", retinex, 1.0),
        ("fidelity", fidelity, 500.0),
    ]


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"fidelity": -1.0}, "model.loss.fidelity"),
        ({"smooth": 0.1}, "model.loss.smooth: .* a term of your own needs a _target_"),
        ({"smooth": {"_target_": "os.sep", "weight": 1}}, "not callable"),
        ({"smooth": {"_target_": "no_such_module.term"}}, "cannot import no_such_module"),
        ({"retinex": {"exposures": "both"}}, "model.loss.retinex.exposures"),
        ({"consistency": {"weight": 1, "colour": 2}}, "does not take these arguments"),
    ],
)
def test_bad_terms_are_refused_naming_the_key(loss, message):
    with pytest.raises(ConfigError, match=message):
        build_terms(loss)


def test_symmetric_terms_average_every_exposure_and_pair():
    images = [full(0.2), full(0.4), full(0.6)]
    outputs = {"illumination": [full(0.5, 1)] * 3, "reflectance": [full(0.1), full(0.3), full(0.6)], "denoised": images}
    step = Step(images, compute=lambda k, part: outputs[part][k])
    # pairs (0.1, 0.3), (0.1, 0.6), (0.3, 0.6): squared differences 0.04, 0.25, 0.09
    assert consistency(step, "all").item() == pytest.approx((0.04 + 0.25 + 0.09) / 3)
    assert consistency(step).item() == pytest.approx(0.04)
    each = [retinex(Step([im], compute=lambda k, part, i=i: outputs[part][i])).item() for i, im in enumerate(images)]
    assert retinex(step, "all").item() == pytest.approx(sum(each) / 3)
    assert fidelity(step, "all").item() == 0.0
