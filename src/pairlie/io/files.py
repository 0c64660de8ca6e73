"""Writing result files so that an interrupted or refused write never leaves a half-written file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pairlie.errors import DataError

# why a result file could not be written -> what the user can do about it
_FIXES = {
    errno.ENOSPC: "free some space or write to another disk",
    errno.EDQUOT: "free some space (disk quota) or write to another disk",
    errno.EFBIG: "write to a file system that takes larger files",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "give write permission there or write elsewhere",
    errno.EPERM: "give write permission there or write elsewhere",
    errno.ENOTDIR: "a file stands where a folder is needed; move it or write elsewhere",
    errno.EEXIST: "a file stands where a folder is needed; move it or write elsewhere",
    errno.EISDIR: "a folder stands where the file goes; move it or write elsewhere",
    errno.ENAMETOOLONG: "use a shorter name or folder",
    errno.EIO: "the disk reported an input/output error; check it or write elsewhere",
}


class WriteError(DataError):
    """A result file could not be written (disk full, read-only, a file where a folder goes); no part of it is left."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path, self.errno = path, exc.errno
        super().__init__(f"cannot write {path} ({exc.strerror or exc}); {_FIXES[exc.errno]}")


def is_write_problem(exc: BaseException) -> bool:
    """True for an OSError that says where a file is written, not what is written (disk full, read-only, ...)."""
    return isinstance(exc, OSError) and exc.errno in _FIXES


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file handle on a temporary file beside ``path``, renamed onto ``path`` only if the block succeeds.

    A full disk, a read-only folder or a file where a folder should be raises a one-line
    `WriteError` naming ``path``; the temporary file is removed whatever happens.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        if not is_write_problem(exc):
            raise
        raise WriteError(path, exc) from None
    try:
        # mkstemp creates 0600; a result file gets the mode open() would give it, so a group can read it
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_write_problem(exc):
            raise WriteError(path, exc) from None
        raise


def check_writable_folder(folder: str | Path, key: str, value: str | Path | None = None) -> None:
    """Raise a one-line `DataError` unless ``folder`` is, or can be made, a folder this process writes in.

    Nothing is created: the nearest existing folder on the way is checked (a file there, or one
    named ``folder`` itself, is refused) and a nameless temporary file is opened in it and dropped.
    The message names ``key=value`` (``value`` defaults to ``folder``).
    """
    folder = Path(folder).expanduser()
    key = f"{key}={folder if value is None else value}"
    if os.path.lexists(folder) and not folder.is_dir():
        raise DataError(f"{key}: {folder} is a file, not a folder; give a folder (made if missing)")
    existing = folder.absolute()
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"{key}: {existing} is a file, not a folder; choose a folder elsewhere")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        fix = _FIXES.get(exc.errno, "choose another folder")
        raise DataError(f"{key}: cannot write in {existing} ({exc.strerror or exc}); {fix}") from None


@contextmanager
def removed_on_write_error(folder: Path, key: str) -> Iterator[None]:
    """On a `WriteError` in the block, remove what the block added to ``folder`` and raise it naming ``key``.

    What was in ``folder`` before (an earlier run's results, kept with ``overwrite=true``) stays.
    """
    existed = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        yield
    except WriteError as exc:
        for path in (set(folder.iterdir()) if folder.is_dir() else set()) - existed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise DataError(f"{key}={folder}: {exc}; what this run had written there was removed") from None


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_open(path) as fh:
        fh.write(text)
