"""Load PairLIE weights from a pairlie Lightning checkpoint or from the authors' official ``.pth``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pairlie.errors import ConfigError, DataError
from pairlie.specs import DEFAULT_NET, build_module, target_name

# The official file stores ``N_net.N_net.<i>.weight``; our nets store ``denoiser.layers.<i>.weight``.
OFFICIAL_PREFIXES = {
    "N_net.N_net.": "denoiser.layers.",
    "L_net.L_net.": "illumination.layers.",
    "R_net.R_net.": "reflectance.layers.",
}
_MODULE_PREFIX = "net."


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict for PairLIENet, hyper-parameters)`` from either checkpoint kind.

    The hyper-parameters are those saved by ``pairlie-train`` (``gamma``, ``width``, ...) and are
    empty for the official file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ckpt_path={path}: no such file; give a pairlie .ckpt or the official PairLIE.pth")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"ckpt_path={path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if isinstance(blob, dict) and "state_dict" in blob:
        state = {k[len(_MODULE_PREFIX) :]: v for k, v in blob["state_dict"].items() if k.startswith(_MODULE_PREFIX)}
        hparams = dict(blob.get("hyper_parameters") or {})
    elif isinstance(blob, dict) and any(k.startswith(tuple(OFFICIAL_PREFIXES)) for k in blob):
        state = {}
        for key, value in blob.items():
            for old, new in OFFICIAL_PREFIXES.items():
                if key.startswith(old):
                    state[new + key[len(old) :]] = value
                    break
            else:
                state[key] = value  # left for load_state_dict(strict=True) to reject
        hparams = {}
    else:
        raise DataError(f"ckpt_path={path}: holds neither a pairlie checkpoint nor the official PairLIE weights")
    if not state:
        raise DataError(f"ckpt_path={path}: no PairLIE network weights inside")
    return state, hparams


def net_spec(state: dict[str, torch.Tensor], hparams: dict[str, Any]) -> dict[str, Any]:
    """What builds the checkpoint's net: the spec ``pairlie-train`` saved, else the paper's nets at the saved width."""
    spec = hparams.get("net")
    if isinstance(spec, dict):
        return spec
    # the official file, and checkpoints written before nets were configurable
    if "denoiser.layers.1.weight" not in state:
        raise DataError("no PairLIE network weights inside, and no model.net saved that says what builds them")
    return {"_target_": DEFAULT_NET, "width": int(state["denoiser.layers.1.weight"].shape[0])}


def load_net(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The net ``path`` describes, rebuilt from its spec, with its weights loaded strictly; and the saved hyper-parameters.

    Rebuilding imports and constructs ``nn.Module`` classes only (:func:`pairlie.specs.build_module`).
    """
    state, hparams = read_weights(path)
    try:
        spec = net_spec(state, hparams)
    except DataError as exc:
        raise DataError(f"ckpt_path={path}: {exc}") from None
    try:
        net = build_module(spec, "model.net")
    except ConfigError as exc:
        raise DataError(f"ckpt_path={path}: cannot rebuild its net: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip()) or str(exc)
        raise DataError(
            f"ckpt_path={path}: weights do not fit the net {target_name(spec)} built from the checkpoint ({reason})"
        ) from None
    return net.eval(), hparams
