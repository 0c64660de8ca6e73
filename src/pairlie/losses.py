"""PairLIE's training losses: consistency, retinex (with TV) and self-supervised fidelity."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


def tv_loss(illumination: Tensor) -> Tensor:
    """Mean absolute difference between pixels two apart, along H plus along W (as the official code)."""
    grad_h = (illumination[:, :, 2:, :] - illumination[:, :, :-2, :]).abs()
    grad_w = (illumination[:, :, :, 2:] - illumination[:, :, :, :-2]).abs()
    return grad_h.mean() + grad_w.mean()


def consistency_loss(reflectance1: Tensor, reflectance2: Tensor) -> Tensor:
    """Both exposures of one scene share one reflectance: ``MSE(R1, R2)``."""
    return F.mse_loss(reflectance1, reflectance2)


def retinex_loss(illumination: Tensor, reflectance: Tensor, im: Tensor, denoised: Tensor) -> Tensor:
    """``MSE(L·R, X) + MSE(R, X / L.detach()) + MSE(L, max_rgb(im)) + TV(L)``."""
    max_rgb = im.amax(dim=1, keepdim=True)
    decomposition = F.mse_loss(illumination * reflectance, denoised) + F.mse_loss(
        reflectance, denoised / illumination.detach()
    )
    return decomposition + F.mse_loss(illumination, max_rgb) + tv_loss(illumination)


def fidelity_loss(im: Tensor, denoised: Tensor) -> Tensor:
    """The denoiser must stay close to its input: ``MSE(im, X)``."""
    return F.mse_loss(im, denoised)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms; the paper's are 1, 1 and 500."""

    consistency: float = 1.0
    retinex: float = 1.0
    fidelity: float = 500.0

    def __post_init__(self) -> None:
        for name in ("consistency", "retinex", "fidelity"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"model.loss.{name} must be a number >= 0, got {value!r}")


def pairlie_losses(
    illumination1: Tensor,
    reflectance1: Tensor,
    denoised1: Tensor,
    reflectance2: Tensor,
    im1: Tensor,
    weights: LossWeights,
) -> dict[str, Tensor]:
    """Every term and the weighted ``total`` for one pair, given the nets' outputs."""
    terms = {
        "consistency": consistency_loss(reflectance1, reflectance2),
        "retinex": retinex_loss(illumination1, reflectance1, im1, denoised1),
        "fidelity": fidelity_loss(im1, denoised1),
    }
    terms["total"] = (
        weights.consistency * terms["consistency"]
        + weights.retinex * terms["retinex"]
        + weights.fidelity * terms["fidelity"]
    )
    return terms
