"""Load PairLIE weights from a pairlie Lightning checkpoint or from the authors' official ``.pth``: as data, checked before use."""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from pairlie.errors import ConfigError, DataError
from pairlie.specs import DEFAULT_NET, build_module, target_name
from pairlie.trust import _in_module, check_hparams, check_plain, targets, trusted_modules

log = logging.getLogger("pairlie")
MAX_GAMMA = 10.0
# submodules, and parameters plus buffers, a checkpoint's net may declare (the paper's has 45 and 30)
MAX_PARTS = 10_000  # I = L**gamma * R: past this the enhanced image is R alone wherever L < 1

# The official file stores ``N_net.N_net.<i>.weight``; our nets store ``denoiser.layers.<i>.weight``.
OFFICIAL_PREFIXES = {
    "N_net.N_net.": "denoiser.layers.",
    "L_net.L_net.": "illumination.layers.",
    "R_net.R_net.": "reflectance.layers.",
}
_MODULE_PREFIX = "net."


def read_checkpoint(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """The file's contents as data: ``torch.load(weights_only=True)``, never pickle; one-line DataError otherwise.

    Every pairlie command and function that reads a checkpoint reads it here. ``mmap``: tensors are
    paged in when touched (the official file's older format is read whole).
    """
    path = Path(path)
    if not path.is_file():
        what = "no such file" if not path.exists() else "not a regular file"
        raise DataError(f"ckpt_path={path}: {what}; give a pairlie .ckpt or the official PairLIE.pth")
    try:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not mmap or "mmap" not in str(exc):
                raise
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not a pickle naming objects: garbage, a truncated file
            raise DataError(f"ckpt_path={path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
        found = re.search(r"GLOBAL (\S+)", str(exc))
        names = f" ({found.group(1)})" if found else ""
        raise DataError(
            f"ckpt_path={path}: holds Python objects{names} that only pickle can load, and loading them could run "
            "code; pairlie reads checkpoints as data only (torch.load weights_only=True): save tensors and plain values"
        ) from None
    except Exception as exc:
        raise DataError(f"ckpt_path={path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(blob, dict):
        raise DataError(
            f"ckpt_path={path}: holds neither a pairlie checkpoint nor the official PairLIE weights (a {type(blob).__name__})"
        )
    return blob


def _tensors(state: Any, path: Path, key: str) -> dict[str, torch.Tensor]:
    """``state`` checked as a mapping of names to finite tensors (one line naming the first that is not)."""
    if not isinstance(state, Mapping):
        raise DataError(f"ckpt_path={path}: {key} is a {type(state).__name__}, not a mapping of names to tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise DataError(
                f"ckpt_path={path}: {key}[{name!r}] is a {type(value).__name__}, not a tensor; not a checkpoint pairlie wrote"
            )
        if not dense(value):
            raise DataError(
                f"ckpt_path={path}: {key}[{name!r}] declares {value.numel()} values but stores "
                f"{value.untyped_storage().nbytes() // max(value.element_size(), 1)}; not weights pairlie wrote"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DataError(
                f"ckpt_path={path}: the weights {name} hold NaN or infinite values (a diverged run?); "
                "use an earlier checkpoint of the run"
            )
    return dict(state)


def dense(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s storage holds all its values: a stride-0 view of one number declares gigabytes in bytes."""
    return tensor.untyped_storage().nbytes() >= tensor.numel() * tensor.element_size()


def check_data(value: Any, path: Path, key: str = "the file", depth: int = 0) -> None:
    """Every tensor anywhere in a checkpoint dense (`dense`): checked before Lightning resumes from it."""
    if depth > 64:
        raise DataError(f"ckpt_path={path}: nested more than 64 levels deep; not a checkpoint pairlie wrote")
    if isinstance(value, torch.Tensor):
        if not dense(value):
            raise DataError(
                f"ckpt_path={path}: {key} declares more values than it stores; not a checkpoint pairlie wrote"
            )
    elif isinstance(value, Mapping):
        for name, item in value.items():
            check_data(item, path, f"{key}[{name!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_data(item, path, f"{key}[{i}]", depth + 1)


def _hparams(blob: dict, path: Path) -> dict[str, Any]:
    hparams = blob.get("hyper_parameters") or {}
    if not isinstance(hparams, Mapping):
        raise DataError(f"ckpt_path={path}: hyper_parameters is a {type(hparams).__name__}, not a mapping")
    try:
        check_plain(dict(hparams), "hyper_parameters")
    except ConfigError as exc:
        raise DataError(f"ckpt_path={path}: {exc}") from None
    gamma = hparams.get("gamma")
    if gamma is not None and (
        isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= MAX_GAMMA
    ):
        raise DataError(
            f"ckpt_path={path}: its gamma {gamma!r} is not a number in (0, {MAX_GAMMA:g}]; pass model.gamma=G"
        )
    return dict(hparams)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict for PairLIENet, hyper-parameters)`` from either checkpoint kind, checked as data.

    The hyper-parameters are those saved by ``pairlie-train`` (``gamma``, ``width``, ...) and are
    empty for the official file. Non-finite weights, a γ outside (0, 10] and values that are not
    plain data are refused in one line.
    """
    path = Path(path)
    blob = read_checkpoint(path)
    if "state_dict" in blob:
        saved = _tensors(blob["state_dict"], path, "state_dict")
        state = {k[len(_MODULE_PREFIX) :]: v for k, v in saved.items() if k.startswith(_MODULE_PREFIX)}
        hparams = _hparams(blob, path)
    elif any(isinstance(k, str) and k.startswith(tuple(OFFICIAL_PREFIXES)) for k in blob):
        state = {}
        for key, value in _tensors(blob, path, "the file").items():
            for old, new in OFFICIAL_PREFIXES.items():
                if key.startswith(old):
                    state[new + key[len(old) :]] = value
                    break
            else:
                state[key] = value  # left for the shape check to reject
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
    if spec is not None:
        raise DataError(f"its model.net is a {type(spec).__name__}, not a spec naming the net's class")
    # the official file, and checkpoints written before nets were configurable
    if "denoiser.layers.1.weight" not in state:
        raise DataError("no PairLIE network weights inside, and no model.net saved that says what builds them")
    return {"_target_": DEFAULT_NET, "width": int(state["denoiser.layers.1.weight"].shape[0])}


def check_fits(spec: dict[str, Any], state: dict[str, torch.Tensor], path: Path, trust: tuple[str, ...]) -> None:
    """Refuse, before any memory is allocated, a spec whose net does not hold exactly ``state``'s tensors.

    The net is built on the meta device (shapes, no storage): a file declaring a width of a million
    with a few bytes of weights is one line, not an allocation.
    """
    counted = {"modules": 0, "tensors": 0}

    def count(kind: str):
        def hook(*args):
            counted[kind] += 1
            if counted[kind] > MAX_PARTS:
                raise ConfigError(f"its net declares more than {MAX_PARTS} {kind}; not a net pairlie can check")

        return hook

    handles = [
        torch.nn.modules.module.register_module_module_registration_hook(count("modules")),
        torch.nn.modules.module.register_module_parameter_registration_hook(count("tensors")),
        torch.nn.modules.module.register_module_buffer_registration_hook(count("tensors")),
    ]
    try:
        with torch.device("meta"):
            probe = build_module(spec, "model.net", trust)
    except ConfigError as exc:
        raise DataError(f"ckpt_path={path}: cannot rebuild its net: {exc}") from None
    except Exception as exc:
        if not trust or not any(_in_module(t, name) for t in targets(spec) for name in trust):
            raise DataError(
                f"ckpt_path={path}: its net {target_name(spec)} cannot be built without memory to check it first "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); not loaded"
            ) from None
        # a class of the user's own (trusted) that cannot be built on the meta device: built for real below
        log.debug("%s: no meta-device check (%s)", target_name(spec), exc)
        return
    finally:
        for handle in handles:
            handle.remove()
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    problems = []  # worded as torch's load_state_dict words them
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    for what, keys in (("Missing", missing), ("Unexpected", unexpected)):
        if keys:
            shown = ", ".join(f'"{k}"' for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            problems.append(f"{what} key(s) in state_dict: {shown}")
    for key in [k for k in expected if k in given and expected[k] != given[k]][:1]:
        problems.append(
            f"size mismatch for {key}: {'x'.join(map(str, given[key]))} in the file, "
            f"{'x'.join(map(str, expected[key]))} in the net"
        )
    if problems:
        raise DataError(
            f"ckpt_path={path}: weights do not fit the net {target_name(spec)} built from the checkpoint "
            f"({'; '.join(problems)})"
        )


def load_net(path: str | Path, trust: str | Iterable[str] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The net ``path`` describes, rebuilt from its spec, with its weights loaded strictly; and the saved hyper-parameters.

    Rebuilding imports only what `pairlie.trust` allows (pairlie's nets, ``torch.nn`` layers)
    and the modules named in ``trust`` (``["my_nets"]``), and constructs ``nn.Module`` classes only.
    """
    path = Path(path)
    trusted = trusted_modules(trust)
    state, hparams = read_weights(path)
    try:
        spec = net_spec(state, hparams)
    except DataError as exc:
        raise DataError(f"ckpt_path={path}: {exc}") from None
    check_fits(spec, state, path, trusted)
    try:
        net = build_module(spec, "model.net", trusted)
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


def read_module(
    path: str | Path, trust: str | Iterable[str] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(hyper-parameters, state_dict)`` of a pairlie Lightning checkpoint, every name in it allowed or trusted.

    For `pairlie.train.module.PairLIEModule.load_from_checkpoint`: the optimiser and scheduler may
    name ``torch.optim`` classes, loss terms pairlie's own, and the net what `load_net` allows,
    beyond which only ``trust``'s modules; all checked before anything is imported.
    """
    path = Path(path)
    trusted = trusted_modules(trust)
    blob = read_checkpoint(path)
    if "state_dict" not in blob or "hyper_parameters" not in blob:
        raise DataError(f"ckpt_path={path}: not a pairlie-train checkpoint (no state_dict and hyper_parameters)")
    state = _tensors(blob["state_dict"], path, "state_dict")
    hparams = _hparams(blob, path)
    try:
        check_hparams(hparams, trusted)
    except ConfigError as exc:
        raise DataError(f"ckpt_path={path}: {exc}") from None
    net_state = {k[len(_MODULE_PREFIX) :]: v for k, v in state.items() if k.startswith(_MODULE_PREFIX)}
    try:
        spec = net_spec(net_state, hparams)
    except DataError as exc:
        raise DataError(f"ckpt_path={path}: {exc}") from None
    check_fits(spec, net_state, path, trusted)
    return hparams, state
