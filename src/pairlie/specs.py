"""Nets as data: the ``_target_`` spec that builds a net, kept in its checkpoint, and a builder that only constructs modules.

A checkpoint is data. Rebuilding its net imports only the classes `pairlie.trust` allows by
name (``trust``: None for a config or a Python caller, whose names are theirs to run) and
constructs them with plain values (numbers, strings, lists, nested specs); anything that is not an
``nn.Module`` class (``os.system``, ``builtins.eval``, a function, a LightningModule, ``_partial_``)
is refused before it is called.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from pairlie import trust as trust_policy
from pairlie.errors import ConfigError, first_line

DEFAULT_NET = "pairlie.model.nets.PairLIENet"
PLAIN = (str, int, float, bool, type(None))
# Hydra's keys a spec may carry besides _target_ and _args_ (positional arguments); ignored (_partial_ is refused)
IGNORED_KEYS = ("_convert_", "_recursive_")
IMPORT_HINT = "run from the folder that holds that file, put it on PYTHONPATH, or install the package that provides it"


def locate(target: Any, key: str, kind: str = "net", trust: tuple[str, ...] | None = None) -> Any:
    """The object a dotted ``target`` names (``package.module.Name``), importing its module; one-line ConfigError otherwise.

    ``trust`` not None (a checkpoint's name): only what `pairlie.trust.allowed` allows for a
    ``kind`` part is imported; anything else is refused before its module is looked at.
    """
    if not isinstance(target, str) or "." not in target.strip("."):
        raise ConfigError(f"{key}._target_={target!r}: must name a class as module.Name")
    if trust is not None and not trust_policy.allowed(target, kind, trust):
        raise trust_policy.refusal(target, key, kind)
    parts = target.split(".")
    error: Exception | None = None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # only a missing module *named by the target* means "try a shorter module path"
            if exc.name is not None and module_name.startswith(exc.name):
                error = error or exc
                continue
            raise ConfigError(
                f"{key}._target_={target}: importing {module_name} failed ({type(exc).__name__}: {exc})"
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"{key}._target_={target}: importing {module_name} failed ({type(exc).__name__}: {first_line(exc)})"
            ) from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                close = difflib.get_close_matches(attr, [n for n in dir(obj) if not n.startswith("_")], n=1)
                hint = (
                    f"; did you mean {'.'.join([*parts[:cut], close[0]])}?" if close and cut == len(parts) - 1 else ""
                )
                raise ConfigError(f"{key}._target_={target}: {module_name} has no {'.'.join(parts[cut:])}{hint}")
            obj = getattr(obj, attr)
        if trust is not None:  # a checkpoint's name: the object found must live where an allowed name says
            home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
            if not trust_policy.allowed(home, kind, trust) or ".<" in home:
                raise ConfigError(
                    f"{key}._target_={target}: names {home}, which a checkpoint may not name; "
                    f"add trust={home.split('.')[0]} only if you know what it does"
                )
        return obj
    raise ConfigError(f"{key}._target_={target}: cannot import {parts[0]} ({error}); {IMPORT_HINT}")


def build_module(spec: Any, key: str = "model.net", trust: tuple[str, ...] | None = None) -> nn.Module:
    """The ``nn.Module`` ``spec`` describes: ``{"_target_": "pkg.Class", arg: value, ...}``, nested specs built first.

    ``trust``: None for a spec from a config or Python (anything it names is imported), else the
    modules trusted beyond `pairlie.trust`'s allowlist (a checkpoint's spec).
    """
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"{key}: must be a mapping with a _target_ naming an nn.Module class, got {spec!r}")
    if "_partial_" in spec:
        raise ConfigError(f"{key}._partial_: not accepted for a net: a net is built, not called later")
    if trust is not None:  # every name in the spec allowed before the first import
        trust_policy.check_plain(spec, key)
        trust_policy.check_names(spec, key, "net", trust)
    cls = locate(spec["_target_"], key, "net", trust)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"{key}._target_={spec['_target_']}: not an nn.Module class; a net is built only from nn.Module classes"
        )
    if _is_lightning_module(cls):
        raise ConfigError(
            f"{key}._target_={spec['_target_']}: a LightningModule, not a net; name the nn.Module it trains"
        )
    args = spec.get("_args_", [])
    if not isinstance(args, (list, tuple)):
        raise ConfigError(f"{key}._args_: must be a list of positional arguments")
    args = [_value(value, f"{key}._args_[{i}]", trust) for i, value in enumerate(args)]
    kwargs = {
        name: _value(value, f"{key}.{name}", trust)
        for name, value in spec.items()
        if name not in ("_target_", "_args_") and name not in IGNORED_KEYS
    }
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{key}: {spec['_target_']} does not take these arguments ({exc})") from None
    except ValueError:
        pass  # no signature to check: let the call say
    try:
        module = cls(*args, **kwargs)
    except (ConfigError, ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {spec['_target_']}(...) refused its arguments: {first_line(exc)}") from None
    except Exception as exc:
        if trust is None:  # a config's or a caller's own class: its error is theirs to see
            raise
        raise ConfigError(f"{key}: {spec['_target_']}(...) failed ({type(exc).__name__}: {first_line(exc)})") from None
    module.pairlie_spec = plain_spec(spec)
    return module


def build_part(spec: Mapping[str, Any], key: str, kind: str, base: type | tuple, *args: Any, trust=None) -> Any:
    """``spec``'s class (a ``base`` subclass: an optimiser, a scheduler) called with ``args`` and its plain keys.

    The ``_partial_`` spec of a config or checkpoint, completed with what only the run knows (the
    parameters, the optimiser). No Hydra: nothing nested is instantiated and no ``${...}`` is
    resolved; a value that is a spec is refused in one line.
    """
    target = spec.get("_target_")
    if trust is not None:
        trust_policy.check_plain(dict(spec), key)
    cls = locate(target, key, kind, trust)
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        names = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in (base if isinstance(base, tuple) else (base,)))
        raise ConfigError(f"{key}._target_={target}: not a {names} class")
    kwargs = {}
    for name, value in spec.items():
        if name.startswith("_") and name.endswith("_"):
            if name in ("_target_", "_partial_", *IGNORED_KEYS):
                continue
            raise ConfigError(f"{key}.{name}: not accepted here; give the class's keyword arguments")
        kwargs[name] = _plain(plain_spec(value), f"{key}.{name}")
    return cls(*args, **kwargs)


def _plain(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise ConfigError(f"{key}: a spec ({value['_target_']}) where a value belongs; give plain values here")
        return {k: _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PLAIN):
        return value
    raise ConfigError(f"{key}: {type(value).__name__} values are not accepted; give numbers, strings or lists")


def _is_lightning_module(cls: type) -> bool:
    lightning = sys.modules.get("lightning.pytorch") or sys.modules.get("pytorch_lightning")
    return lightning is not None and issubclass(cls, lightning.LightningModule)


def _value(value: Any, key: str, trust: tuple[str, ...] | None = None) -> Any:
    if isinstance(value, Mapping) and "_target_" in value:
        return build_module(value, key, trust)
    if isinstance(value, Mapping):
        return {k: _value(v, f"{key}.{k}", trust) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value(v, f"{key}[{i}]", trust) for i, v in enumerate(value)]
    if isinstance(value, PLAIN):
        return value
    raise ConfigError(f"{key}: {type(value).__name__} values are not accepted; give numbers, strings, lists or specs")


def plain_spec(spec: Any) -> Any:
    """``spec`` as plain dicts and lists (an OmegaConf node resolved), for hyper-parameters and checkpoints."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(spec, (DictConfig, ListConfig)):
            return OmegaConf.to_container(spec, resolve=True)
    except ImportError:
        pass
    if isinstance(spec, Mapping):
        return {k: plain_spec(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [plain_spec(v) for v in spec]
    return spec


def describe(net: nn.Module) -> dict:
    """The spec that rebuilds ``net``: the one it was built from (or records itself), else its class with no arguments.

    A module made in Python from other classes records nothing: it is described as its class only,
    and loading its checkpoint says what does not fit. Build it from a spec to keep its arguments.
    """
    spec = getattr(net, "pairlie_spec", None)
    if spec is not None and spec.get("_target_", "").rsplit(".", 1)[-1] == type(net).__name__:
        return spec
    cls = type(net)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}"}


def target_name(spec: Any) -> str:
    return spec.get("_target_", "?") if isinstance(spec, Mapping) else type(spec).__name__
