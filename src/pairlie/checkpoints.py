"""Load PairLIE weights from a pairlie Lightning checkpoint or from the authors' official ``.pth``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pairlie.errors import DataError
from pairlie.nets import PairLIENet

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
    if "denoiser.layers.1.weight" not in state:
        raise DataError(f"ckpt_path={path}: no PairLIE network weights inside")
    return state, hparams


def load_net(path: str | Path) -> tuple[PairLIENet, dict[str, Any]]:
    """A :class:`PairLIENet` with the weights in ``path`` loaded strictly, and the saved hyper-parameters."""
    state, hparams = read_weights(path)
    width = state["denoiser.layers.1.weight"].shape[0]
    net = PairLIENet(width=width)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"ckpt_path={path}: weights do not fit the PairLIE nets ({first})") from None
    return net.eval(), hparams
