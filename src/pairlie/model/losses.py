"""PairLIE's training losses: consistency, retinex (with TV) and self-supervised fidelity."""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pairlie.errors import ConfigError, first_line
from pairlie.model.nets import enhance

log = logging.getLogger("pairlie")


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


# what every term is, said by each message about one
TERM_FORM = "a term is fn(step, **kwargs) returning a scalar tensor (docs/your-own-model.md)"
# the paper's terms, in the paper's sum order, with its weights
PAPER_WEIGHTS = {"consistency": 1.0, "retinex": 1.0, "fidelity": 500.0}
EXPOSURE_CHOICES = ("first", "all")


class Step:
    """The tensors of one training step, for loss terms: exposures and each one's L, R, X and I, as fp32.

    The loss-term contract: a term is a function `fn(step, **kwargs)` returning a scalar tensor
    ([`build_terms`][pairlie.model.losses.build_terms] builds them from `model.loss`). It reads the
    exposures from `images` and the nets' outputs from
    [`illumination`][pairlie.model.losses.Step.illumination],
    [`reflectance`][pairlie.model.losses.Step.reflectance],
    [`denoised`][pairlie.model.losses.Step.denoised] and
    [`enhanced`][pairlie.model.losses.Step.enhanced]. Each output is computed the first time a
    term asks and shared by every term after it (the paper's terms never need the illumination of
    the second exposure, so it is never computed); gradients flow through all of them, also under
    mixed precision. `len(step)` is the number of exposures (2 in the paper).

    Args:
        images: The step's exposures of one batch of scenes, each N×C×H×W in [0, 1].
        compute: `compute(k, part)` returns the nets' output `part` (`"illumination"`,
            `"reflectance"` or `"denoised"`) for exposure `k`.
        gamma: The run's γ, for [`enhanced`][pairlie.model.losses.Step.enhanced]; `None`: a step
            without one.

    Attributes:
        images (list[Tensor]): The exposures as fp32: `images[k]` is exposure `k` (0-based; the
            paper's retinex and fidelity terms use 0).
        gamma (float | None): The run's γ (`model.gamma`).
    """

    def __init__(self, images: list[Tensor], compute: Callable[[int, str], Tensor], gamma: float | None = None) -> None:
        self.images = [im.float() for im in images]
        self._compute = compute
        self.gamma = gamma
        self._cache: dict[tuple[int, str], Tensor] = {}

    def __len__(self) -> int:
        return len(self.images)

    def _get(self, k: int, part: str) -> Tensor:
        if (k, part) not in self._cache:
            self._cache[(k, part)] = self._compute(k, part).float()
        return self._cache[(k, part)]

    def put(self, k: int, part: str, value: Tensor) -> None:
        """Record an output computed ahead (the module computes the paper's outputs in the published order)."""
        self._cache[(k, part)] = value.float()

    def illumination(self, k: int = 0) -> Tensor:
        """L of exposure `k` (0-based), L's output on X: N×1×H×W fp32 for the paper's nets."""
        return self._get(k, "illumination")

    def reflectance(self, k: int = 0) -> Tensor:
        """R of exposure `k` (0-based), R's output on X: N×C×H×W fp32, the same scene's colours in every exposure."""
        return self._get(k, "reflectance")

    def denoised(self, k: int = 0) -> Tensor:
        """X of exposure `k` (0-based), the denoiser N's output on `images[k]`: N×C×H×W fp32."""
        return self._get(k, "denoised")

    def enhanced(self, k: int = 0) -> Tensor:
        """The enhanced image ``I = L**gamma * R`` of exposure ``k`` at the run's γ (what pairlie-enhance gives)."""
        if self.gamma is None:
            raise ValueError("this Step has no gamma: build it with Step(images, compute, gamma=...)")
        if (k, "enhanced") not in self._cache:
            self._cache[(k, "enhanced")] = enhance(self.illumination(k), self.reflectance(k), self.gamma)
        return self._cache[(k, "enhanced")]


def _exposures(step: Step, exposures: str) -> range:
    if exposures not in EXPOSURE_CHOICES:
        raise ValueError(f"exposures={exposures!r}: must be first (the paper's) or all")
    return range(1) if exposures == "first" else range(len(step))


def consistency(step: Step, exposures: str = "first") -> Tensor:
    """``MSE(R1, R2)`` (``first``, the paper's), or the mean over every pair of exposures (``all``)."""
    if exposures == "first":
        return consistency_loss(step.reflectance(0), step.reflectance(1))
    _exposures(step, exposures)
    pairs = [(i, j) for i in range(len(step)) for j in range(i + 1, len(step))]
    return sum(consistency_loss(step.reflectance(i), step.reflectance(j)) for i, j in pairs) / len(pairs)


def retinex(step: Step, exposures: str = "first") -> Tensor:
    """The retinex term on the first exposure (the paper's), or its mean over every exposure (``all``)."""
    ks = _exposures(step, exposures)
    total = sum(retinex_loss(step.illumination(k), step.reflectance(k), step.images[k], step.denoised(k)) for k in ks)
    return total / len(ks) if len(ks) > 1 else total


def fidelity(step: Step, exposures: str = "first") -> Tensor:
    """``MSE(im, X)`` on the first exposure (the paper's), or its mean over every exposure (``all``)."""
    ks = _exposures(step, exposures)
    total = sum(fidelity_loss(step.images[k], step.denoised(k)) for k in ks)
    return total / len(ks) if len(ks) > 1 else total


PAPER_TERMS = {"consistency": consistency, "retinex": retinex, "fidelity": fidelity}


@dataclass(frozen=True)
class Term:
    """One weighted loss term: ``weight * fn(step, **kwargs)``, logged as ``train/<name>``."""

    name: str
    fn: Callable[..., Tensor]
    weight: float
    kwargs: dict = field(default_factory=dict)

    def __call__(self, step: Step) -> Tensor:
        return self.fn(step, **self.kwargs)


def build_terms(config: Mapping[str, Any] | None) -> list[Term]:
    """The weighted terms of ``model.loss``: the paper's three (a number is its weight), then any others, in order.

    A term is a number (a paper term's weight) or a mapping: ``weight`` (default 1), ``_target_``
    (a callable given the [`Step`][pairlie.model.losses.Step], returning a scalar; the paper's function by default for
    the paper's names) and keyword arguments for it. A name set to null drops the term.
    """
    from pairlie.specs import locate

    given = dict(config) if config is not None else {}
    merged = {**{k: PAPER_WEIGHTS[k] for k in PAPER_WEIGHTS if k not in given}, **given}
    ordered = [k for k in PAPER_WEIGHTS if k in merged] + [k for k in given if k not in PAPER_WEIGHTS]
    terms = []
    for name in ordered:
        value, key = merged[name], f"model.loss.{name}"
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, Mapping)):
            raise ConfigError(
                f"{key}={value!r}: must be a weight (a number >= 0) or a mapping with _target_ and weight"
            )
        spec = {"weight": value} if not isinstance(value, Mapping) else dict(value)
        weight = spec.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(
                f"{key}{'' if not isinstance(value, Mapping) else '.weight'}: must be a number >= 0, got {weight!r}"
            )
        for hydra_key in ("_partial_", "_convert_", "_recursive_"):
            spec.pop(hydra_key, None)
        target = spec.pop("_target_", None)
        if target is None:
            if name not in PAPER_TERMS:
                close = difflib.get_close_matches(name, PAPER_TERMS, n=1)
                hint = f"did you mean model.loss.{close[0]}? " if close else ""
                raise ConfigError(
                    f"{key}: not one of the paper's terms ({', '.join(PAPER_TERMS)}); {hint}"
                    "a term of your own needs a _target_ naming its function (module.function)"
                )
            fn = PAPER_TERMS[name]
        else:
            fn = locate(target, key)
            if not callable(fn):
                raise ConfigError(f"{key}._target_={target}: not callable; name a function taking the step's tensors")
        try:
            inspect.signature(fn).bind(None, **spec)
        except TypeError as exc:
            given = ", ".join(["step", *(f"{k}={v!r}" for k, v in spec.items())])
            raise ConfigError(
                f"{key}: {_name(fn)} does not take these arguments ({exc}): it is called as "
                f"{getattr(fn, '__name__', 'fn')}({given}); {TERM_FORM}"
            ) from None
        except ValueError:
            pass
        if "exposures" in spec and spec["exposures"] not in EXPOSURE_CHOICES:
            raise ConfigError(f"{key}.exposures={spec['exposures']!r}: must be first (the paper's) or all")
        terms.append(Term(name, fn, float(weight), spec))
    if not terms:
        raise ConfigError("model.loss: no terms left; keep at least one (the paper's: consistency, retinex, fidelity)")
    return terms


def _name(fn) -> str:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(fn)


def _not_scalar(value) -> str | None:
    """What is wrong with a term's value, or None for a scalar tensor."""
    if not isinstance(value, Tensor):
        return f"returned {type(value).__name__}, not a tensor"
    if value.numel() != 1:
        return f"returned a tensor of shape {tuple(value.shape)}, not a scalar"
    return None


def probe_terms(terms: list[Term], net: torch.nn.Module, gamma: float, channels: int = 3, size: int = 32) -> None:
    """Call every term once on a small random `Step` and back-propagate it: one ConfigError naming the first that fails.

    The probe is two exposures of one random ``channels``×``size``×``size`` image, through ``net``
    in fp32 with gradients, as a training step runs it: a term that breaks only in backward (an
    in-place edit of a tensor autograd needs) is caught too. The global random state and the nets'
    gradients are left as they were (a BatchNorm's running statistics are not: probe a model built
    to be checked, as ``pairlie-train`` does before its run folder exists).
    """
    generator = torch.Generator().manual_seed(0)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    images = [torch.rand(1, channels, size, size, generator=generator).to(device) * s for s in (0.5, 0.25)]
    with torch.random.fork_rng(devices=[]):
        try:
            outputs = [net(im) for im in images]
        except Exception as exc:
            raise ConfigError(
                f"model.net: its forward failed on a probe batch of 1x{channels}x{size}x{size} "
                f"({type(exc).__name__}: {first_line(exc)}); a net takes B×C×H×W images in [0, 1] and returns "
                "(illumination, reflectance, denoised) (docs/your-own-model.md)"
            ) from None
        step = Step(images, compute=None, gamma=gamma)
        for k, out in enumerate(outputs):
            for part, value in zip(("illumination", "reflectance", "denoised"), out, strict=True):
                step.put(k, part, value)
        try:
            for term in terms:
                _probe_term(term, step)
        finally:
            for p in net.parameters():
                p.grad = None


def _probe_term(term: Term, step: Step) -> None:
    key, call = f"model.loss.{term.name}", f"{_name(term.fn)}(step)"
    try:
        value = term(step)
        problem = _not_scalar(value)
        if problem is None and value.requires_grad:
            value.backward(retain_graph=True)
    except Exception as exc:
        raise ConfigError(
            f"{key}: {call} failed on a probe step: {type(exc).__name__}: {first_line(exc)}; {TERM_FORM}"
        ) from None
    if problem is not None:
        raise ConfigError(f"{key}: {call} {problem} on a probe step; {TERM_FORM}")
    if not value.requires_grad and term.weight > 0:
        log.warning("%s: %s does not depend on the nets' outputs: it trains nothing", key, call)


def weighted_terms(step: Step, terms: list[Term]) -> dict[str, Tensor]:
    """Every term's value and the weighted ``total``, summed in the terms' order (the paper's first)."""
    values: dict[str, Tensor] = {}
    total = None
    for term in terms:
        value = term(step)
        problem = _not_scalar(value)
        if problem is not None:
            raise ConfigError(f"model.loss.{term.name}: {_name(term.fn)}(step) {problem}; {TERM_FORM}")
        values[term.name] = value
        weighted = term.weight * value
        total = weighted if total is None else total + weighted
    values["total"] = total
    return values
