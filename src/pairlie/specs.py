"""Nets as data: the ``_target_`` spec that builds a net, kept in its checkpoint, and a builder that only constructs modules.

A checkpoint is data. Rebuilding its net imports the classes its spec names and constructs them
with plain values (numbers, strings, lists, nested specs); anything that is not an ``nn.Module``
class (``os.system``, ``builtins.eval``, a function, ``_partial_``) is refused before it is called.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from pairlie.errors import ConfigError, first_line

DEFAULT_NET = "pairlie.nets.PairLIENet"
PLAIN = (str, int, float, bool, type(None))
# Hydra's keys a spec may carry besides _target_ and _args_ (positional arguments); ignored (_partial_ is refused)
IGNORED_KEYS = ("_convert_", "_recursive_")
IMPORT_HINT = "run from the folder that holds that file, put it on PYTHONPATH, or install the package that provides it"


def locate(target: Any, key: str) -> Any:
    """The object a dotted ``target`` names (``package.module.Name``), importing its module; one-line ConfigError otherwise."""
    if not isinstance(target, str) or "." not in target.strip("."):
        raise ConfigError(f"{key}._target_={target!r}: must name a class as module.Name")
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
        return obj
    raise ConfigError(f"{key}._target_={target}: cannot import {parts[0]} ({error}); {IMPORT_HINT}")


def build_module(spec: Any, key: str = "model.net") -> nn.Module:
    """The ``nn.Module`` ``spec`` describes: ``{"_target_": "pkg.Class", arg: value, ...}``, nested specs built first."""
    if isinstance(spec, nn.Module):
        return spec
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"{key}: must be a mapping with a _target_ naming an nn.Module class, got {spec!r}")
    if "_partial_" in spec:
        raise ConfigError(f"{key}._partial_: not accepted for a net: a net is built, not called later")
    cls = locate(spec["_target_"], key)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"{key}._target_={spec['_target_']}: not an nn.Module class; a net is built only from nn.Module classes"
        )
    args = spec.get("_args_", [])
    if not isinstance(args, (list, tuple)):
        raise ConfigError(f"{key}._args_: must be a list of positional arguments")
    args = [_value(value, f"{key}._args_[{i}]") for i, value in enumerate(args)]
    kwargs = {
        name: _value(value, f"{key}.{name}")
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
    module.pairlie_spec = plain_spec(spec)
    return module


def _value(value: Any, key: str) -> Any:
    if isinstance(value, Mapping) and "_target_" in value:
        return build_module(value, key)
    if isinstance(value, Mapping):
        return {k: _value(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
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
