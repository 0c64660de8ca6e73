"""Errors a user can fix: the CLIs print their message as one line, never a traceback."""


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
