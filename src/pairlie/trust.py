"""A checkpoint is data: what it may name is decided by name, before anything is imported.

A pairlie checkpoint names the classes that rebuild its net (and its loss terms, optimiser and
scheduler). Loading one imports only what this allowlist names: pairlie's nets, ``torch.nn``
layers, pairlie's loss terms, ``torch.optim`` optimisers and schedulers. Any other module is
imported only when the user trusts it by name (``trust=my_nets`` on the command line,
``trust=["my_nets"]`` in Python), as transformers' ``trust_remote_code`` and torch.hub's
``trust_repo`` do. Values beside the names must be plain data: numbers, strings, booleans, null,
lists and mappings.

Configs are code (Hydra's model): what a config or a Python caller names is theirs to run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from pairlie._aliases import current
from pairlie.errors import ConfigError

# what a checkpoint may name without trust=, by kind of part
NETS = frozenset({"pairlie.model.nets.PairLIENet", "pairlie.model.nets.ConvNet"})
LOSSES = frozenset(
    {"pairlie.model.losses.consistency", "pairlie.model.losses.retinex", "pairlie.model.losses.fidelity"}
)
KINDS = ("net", "loss", "optimizer", "scheduler")
# torch.nn's wrappers that take processes or devices, not layers
_NOT_LAYERS = ("torch.nn.parallel.",)
_MAX_DEPTH = 64  # nesting of a spec: deeper is not a net, it is an attack on the recursion limit


def trusted_modules(trust: str | Iterable[str] | None) -> tuple[str, ...]:
    """``trust`` as a tuple of dotted module names: ``"a"``, ``"a,b"``, ``["a", "b"]`` or None."""
    if trust is None:
        return ()
    if isinstance(trust, str):
        names = [n.strip() for n in trust.split(",")]
    elif isinstance(trust, Iterable) and not isinstance(trust, (bytes, Mapping)):
        names = list(trust)
    else:
        raise ConfigError(f"trust={trust!r}: give module names, e.g. trust=my_nets or trust=[my_nets,my_losses]")
    for name in names:
        if not isinstance(name, str) or not name or not all(p.isidentifier() for p in name.split(".")):
            raise ConfigError(f"trust={trust!r}: {name!r} is not a module name (e.g. my_nets or my_package.nets)")
    return tuple(names)


def _in_module(target: str, module: str) -> bool:
    return target == module or target.startswith(module + ".")


def allowed(target: str, kind: str, trust: Iterable[str] = ()) -> bool:
    """Whether a checkpoint may name ``target`` as a ``kind`` part, decided from the name alone.

    A path from before pairlie's sub-packages (``pairlie.nets.PairLIENet``) is judged as today's.
    """
    target = current(target)
    if any(_in_module(target, name) for name in trust):
        return True
    if kind == "net":
        return target in NETS or (target.startswith("torch.nn.") and not target.startswith(_NOT_LAYERS))
    if kind == "loss":
        return target in LOSSES
    if kind == "optimizer":
        return target.startswith("torch.optim.") and not target.startswith("torch.optim.lr_scheduler.")
    if kind == "scheduler":
        return target.startswith("torch.optim.lr_scheduler.")
    return False


def refusal(target: str, key: str, kind: str) -> ConfigError:
    """The one line for a name a checkpoint may not import: which module, and the ``trust=`` that allows it."""
    module = target.rsplit(".", 1)[0] if "." in target else target
    what = {
        "net": "pairlie's nets and torch.nn layers",
        "loss": "pairlie's loss terms",
        "optimizer": "torch.optim optimisers",
        "scheduler": "torch.optim.lr_scheduler schedulers",
    }.get(kind)
    if what is None:
        return ConfigError(
            f"{key}._target_={target}: a checkpoint names classes in model.net, model.loss, model.optimizer and "
            "model.scheduler only"
        )
    return ConfigError(
        f"{key}._target_={target}: a checkpoint may name {what} only; {module} is imported (and runs) only if you "
        f"trust it: add trust={module.split('.')[0]} (Python: trust=[{module.split('.')[0]!r}]) if you know what it does"
    )


def check_plain(value: Any, key: str, depth: int = 0) -> None:
    """Refuse anything but plain data in a checkpoint's hyper-parameters, in one line naming the key."""
    if depth > _MAX_DEPTH:
        raise ConfigError(f"{key}: nested more than {_MAX_DEPTH} levels deep; not a pairlie checkpoint")
    if isinstance(value, str):
        if "${" in value:
            raise ConfigError(f"{key}={value[:60]!r}: a checkpoint holds values, not ${{...}} interpolations")
        return
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(f"{key}: a key {name!r} is not a string; a checkpoint holds plain mappings")
            check_plain(item, f"{key}.{name}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{key}[{i}]", depth + 1)
        return
    raise ConfigError(
        f"{key}: a {type(value).__name__} value; a checkpoint's hyper-parameters are numbers, strings, booleans, "
        "null, lists and mappings"
    )


def check_names(spec: Any, key: str, kind: str, trust: Iterable[str] = (), nested: bool = True) -> None:
    """Every ``_target_`` in ``spec`` allowed as a ``kind`` part (``nested=False``: only at its top), before import."""
    _walk(spec, key, kind, tuple(trust), nested, top=True)


def _walk(spec: Any, key: str, kind: str, trust: tuple, nested: bool, top: bool) -> None:
    if isinstance(spec, Mapping):
        if "_target_" in spec:
            target = spec["_target_"]
            if not top and not nested:
                raise ConfigError(f"{key}._target_={target!r}: a checkpoint's {kind} takes plain values, not specs")
            if not isinstance(target, str) or not allowed(target, kind, trust):
                raise refusal(str(target), key, kind)
        for name, value in spec.items():
            _walk(value, f"{key}.{name}", kind, trust, nested, top=False)
    elif isinstance(spec, (list, tuple)):
        for i, value in enumerate(spec):
            _walk(value, f"{key}[{i}]", kind, trust, nested, top=False)


def check_hparams(hparams: Mapping[str, Any], trust: Iterable[str] = ()) -> None:
    """A pairlie checkpoint's hyper-parameters: plain data, and only allowed or trusted names, checked before import.

    ``net`` may nest specs (its parts); a loss term, the optimiser and the scheduler are one name
    with plain arguments each.
    """
    trust = tuple(trust)
    check_plain(dict(hparams), "hyper_parameters")
    for name, value in hparams.items():
        key = f"model.{name}"
        if name == "net":
            check_names(value, key, "net", trust)
        elif name == "loss" and isinstance(value, Mapping):
            for term, spec in value.items():
                check_names(spec, f"{key}.{term}", "loss", trust, nested=False)
        elif name in ("optimizer", "scheduler"):
            check_names(value, key, name, trust, nested=False)
        else:
            check_names(value, key, "none", trust, nested=False)


def untrusted_modules(hparams: Mapping[str, Any]) -> list[str]:
    """The top-level modules a checkpoint with ``hparams`` needs trusted to load: what its next commands' ``trust=`` names."""
    found: list[str] = []

    def visit(spec: Any, kind: str) -> None:
        if isinstance(spec, Mapping):
            target = spec.get("_target_")
            if isinstance(target, str) and not allowed(target, kind):
                top = target.split(".")[0]
                if top not in found:
                    found.append(top)
            for value in spec.values():
                visit(value, kind)
        elif isinstance(spec, (list, tuple)):
            for value in spec:
                visit(value, kind)

    visit(hparams.get("net"), "net")
    for spec in (hparams.get("loss") or {}).values():
        visit(spec, "loss")
    visit(hparams.get("optimizer"), "optimizer")
    visit(hparams.get("scheduler"), "scheduler")
    return found


def trust_argument(modules: list[str]) -> str:
    """``trust=a`` or ``trust=[a,b]`` for a command line; empty when nothing needs trusting."""
    if not modules:
        return ""
    return f"trust={modules[0]}" if len(modules) == 1 else f"trust=[{','.join(modules)}]"


def targets(cfg: Any) -> list[str]:
    """Every ``_target_`` string in a (plain or OmegaConf) config, interpolations left unresolved."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, Mapping):
            for name, value in node.items():
                if name == "_target_" and isinstance(value, str):
                    found.append(value)
                else:
                    visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg)
    return found


def add_working_folder_for(names: Iterable[str], folder: str | None = None) -> bool:
    """Put the working folder on the import path, last, only for modules the user named that are found nowhere else.

    A module of one's own (``my_nets.py`` beside the command) is found as ``python -m`` would find
    it; a file there never shadows an installed package, and a folder holding none of the named
    modules is not searched at all (an ``onnx.py`` there is never imported in place of ONNX).
    """
    folder = os.path.abspath(folder or os.getcwd())
    if folder in sys.path or os.path.realpath(folder) in map(os.path.realpath, filter(None, sys.path)):
        return False
    for name in names:
        top = name.split(".")[0]
        if not top.isidentifier():
            continue
        if top in sys.modules:
            continue
        try:
            elsewhere = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            elsewhere = False
        here = os.path.isfile(os.path.join(folder, f"{top}.py")) or os.path.isfile(
            os.path.join(folder, top, "__init__.py")
        )
        if here and not elsewhere:
            sys.path.append(folder)
            return True
    return False
