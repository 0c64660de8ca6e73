"""Errors a user can fix: the CLIs print their message as one line, never a traceback."""


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
