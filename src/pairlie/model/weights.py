"""The authors' published PairLIE weights (``ckpt_path=official``): downloaded once into the user cache, checked by SHA-256."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from pairlie.errors import DataError
from pairlie.io.files import atomic_open

OFFICIAL = "official"  # the ckpt_path value that names the authors' weights
FILE_NAME = "PairLIE.pth"
# zhenqifu/PairLIE, weights/PairLIE.pth at a fixed commit: the bytes below cannot change under that address
COMMIT = "3fd5c1586aa5f8f0736382de36d5bf46a4e208c2"
URL = f"https://raw.githubusercontent.com/zhenqifu/PairLIE/{COMMIT}/weights/{FILE_NAME}"
SHA256 = "e223ec9e66504550e69f65b631ce520be9b5c4e8e0aba882768d06af355b0631"
SIZE = 1_377_483
URL_VARIABLE = "PAIRLIE_WEIGHTS_URL"  # another copy of the same file (a mirror); the checksum still applies
DIR_VARIABLE = "PAIRLIE_WEIGHTS_DIR"
TIMEOUT_S = 30.0
CHUNK = 1 << 16


def is_official(ckpt_path: object) -> bool:
    """True when ``ckpt_path`` names the authors' published weights rather than a file."""
    return isinstance(ckpt_path, str) and ckpt_path == OFFICIAL


def weights_dir() -> Path:
    """``$PAIRLIE_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/pairlie/weights``, else ``~/.cache/pairlie/weights``.

    The same convention as the demo set's ``paths.demo_dir``.
    """
    if os.environ.get(DIR_VARIABLE):
        return Path(os.environ[DIR_VARIABLE]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ.get("HOME", "."), ".cache")
    return Path(cache).expanduser() / "pairlie" / "weights"


def weights_url() -> str:
    """``$PAIRLIE_WEIGHTS_URL``, else the authors' repository at the pinned commit."""
    return os.environ.get(URL_VARIABLE) or URL


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def official_weights() -> Path:
    """The path of the authors' ``PairLIE.pth`` in the cache, downloaded and checked on first use.

    The cached file is hashed again on every use (1.4 MB: milliseconds), so a file damaged or
    replaced since is refused instead of loaded. A failed or wrong download leaves nothing at the
    cache path; a wrong file already there is left alone and named.
    """
    url, path = weights_url(), weights_dir() / FILE_NAME
    by_hand = f"download {url} by hand (sha256 {SHA256}) to {path}, or pass ckpt_path=FILE"
    if path.is_file():
        found = sha256_of(path)
        if found != SHA256:
            raise DataError(
                f"ckpt_path=official: {path} has sha256 {found}, not the published {SHA256}; "
                f"remove it to download again, or {by_hand}"
            )
        return path
    if os.path.lexists(path):
        raise DataError(f"ckpt_path=official: {path} is not a file; remove it, or {by_hand}")
    print(f"downloading the authors' {FILE_NAME} from {url} to {path} (first use only)", flush=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # there for a file put by hand if the download fails
    except OSError as exc:
        raise DataError(f"ckpt_path=official: cannot create {path.parent} ({exc.strerror}); {by_hand}") from None
    try:
        _download(url, path)
    except DataError as exc:
        raise DataError(f"ckpt_path=official: {exc}; {by_hand}") from None
    return path


def _download(url: str, path: Path) -> None:
    """Write ``url`` to ``path`` through a temporary file renamed only once its size and SHA-256 match."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"cannot reach {url} ({exc.reason}; offline?)") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DataError(f"cannot reach {url} ({exc})") from None
    digest, received = hashlib.sha256(), 0
    progress = Progress(
        TextColumn(FILE_NAME),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
        transient=True,
    )
    with response, progress, atomic_open(path, "wb") as out:
        task = progress.add_task("download", total=int(response.headers.get("Content-Length") or SIZE))
        try:
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                received += len(block)
                progress.update(task, completed=received)
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(f"the download from {url} broke off after {received:,} bytes ({exc})") from None
        if received != SIZE:
            raise DataError(f"the download from {url} holds {received:,} bytes, not {SIZE:,} (cut short?)")
        if digest.hexdigest() != SHA256:
            raise DataError(f"the file at {url} has sha256 {digest.hexdigest()}, not the published one")
