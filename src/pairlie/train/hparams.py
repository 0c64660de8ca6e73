"""What TensorBoard's HParams tab shows of a run: each setting once, by its config key, only where it tells runs apart."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger("pairlie")

# top-level keys whose values differ per run without being settings (folders), or that HParams cannot show
UNLOGGED = ("hydra", "paths", "logger", "callbacks")


def flat(node: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of ``node``, the top-level ``UNLOGGED`` keys left out."""
    for key, value in node.items():
        if not prefix and key in UNLOGGED:
            continue
        if isinstance(value, Mapping) and value:
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def folders(cfg) -> set[str]:
    """The keys of ``cfg`` (a DictConfig) whose value is read from ``paths`` or Hydra's runtime: folders, not settings."""
    from omegaconf import OmegaConf

    raw = flat(OmegaConf.to_container(cfg, resolve=False))
    return {key for key, value in raw if isinstance(value, str) and ("${paths." in value or "${hydra:" in value)}


def differing(ours: Mapping, defaults: Mapping, given: Iterable[str] = ()) -> dict[str, Any]:
    """The leaves of ``ours`` whose value differs from ``defaults``', and those ``given`` on the command line.

    ``given``: the keys of the command line's overrides (``+``/``~`` stripped). A dotted key names
    a leaf, or a node whose leaves all count (``model.loss.smoothness``); a top-level name that is
    a config group (``data=sice``) adds only the keys its choice changes. Values that are not
    numbers, strings or booleans are shown as text, as HParams needs.
    """
    named = {key.lstrip("+~").split("=", 1)[0] for key in given}
    defaults = dict(flat(defaults))
    params = {}
    for key, value in flat(ours):
        on_command_line = key in named or any(key.startswith(f"{g}.") for g in named if "." in g)
        if on_command_line or defaults.get(key, object()) != value:
            params[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params


def run_params(cfg) -> dict[str, Any]:
    """``pairlie-train``'s keys of this run (a composed Hydra config) that HParams shows: `differing` from a bare run's.

    The defaults are those of ``pairlie-train`` with no overrides, composed by the running Hydra app
    (its ``--config-dir`` included) or, outside one, from the package's configs. Empty where the
    defaults cannot be composed or resolved.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    try:
        ours = OmegaConf.to_container(cfg, resolve=True)
        if GlobalHydra.instance().is_initialized():
            base = GlobalHydra.instance().config_loader().load_configuration("train", [], run_mode=RunMode.RUN)
        else:
            with initialize_config_module(config_module="pairlie.configs", version_base="1.3"):
                base = compose(config_name="train")
        with open_dict(base):
            base.pop("hydra", None)
        defaults = OmegaConf.to_container(base, resolve=True)
        given = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    except Exception as exc:  # defaults that do not resolve: HParams shows the model's own keys
        log.debug("HParams: only the model's own keys (%s)", exc)
        return {}
    params = differing(ours, defaults, given)
    return {key: value for key, value in params.items() if key not in folders(cfg)}
