"""What every CLI shares: the config location and one-line reporting of user errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException

from pairlie.errors import PairLIEError
from pairlie.speed import keep_freed_memory

# A package path, not a file path: it resolves the same after `pip install .` as in a checkout.
CONFIG_PATH = "pkg://pairlie.configs"

log = logging.getLogger("pairlie")


def apply_speed_settings(cfg: Any) -> None:
    """Process-wide settings a CLI's config asks for (``keep_freed_memory``; see :mod:`pairlie.speed`)."""
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()


def user_error(exc: BaseException) -> PairLIEError | None:
    """The :class:`PairLIEError` behind ``exc`` (Hydra wraps errors raised while instantiating)."""
    while exc is not None:
        if isinstance(exc, PairLIEError):
            return exc
        exc = exc.__cause__ or (exc.__context__ if isinstance(exc, InstantiationException) else None)
    return None


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; a user error is printed as one line ``error: ...`` and exits with status 2."""
    try:
        return fn(*args)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
