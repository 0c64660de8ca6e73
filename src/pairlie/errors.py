"""Errors a user can fix: the CLIs print their message as one line, never a traceback."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, else its type's name: a wrapped library error in one line."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class PairLIEError(Exception):
    """Base class: the message names the file or config key at fault and the fix."""


class DataError(PairLIEError):
    """A data folder or image file is missing, unreadable or inconsistent."""


class ConfigError(PairLIEError):
    """A config value is out of range or inconsistent."""


class TrainingDiverged(PairLIEError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class VerificationError(PairLIEError):
    """An exported model computes something other than pairlie does; nothing was written."""


def user_error(exc: BaseException) -> PairLIEError | None:
    """The `PairLIEError` behind ``exc`` (Hydra wraps errors raised while instantiating)."""
    from hydra.errors import InstantiationException  # Hydra is pairlie's; imported only when an error is unwrapped

    while exc is not None:
        if isinstance(exc, PairLIEError):
            return exc
        exc = exc.__cause__ or (exc.__context__ if isinstance(exc, InstantiationException) else None)
    return None
