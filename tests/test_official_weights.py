"""``ckpt_path=official``: the authors' PairLIE.pth downloaded once into the cache, checked, reused; served from loopback.

No test touches the network: a ThreadingHTTPServer on 127.0.0.1 serves ../shared/weights/PairLIE.pth
(whole, cut short, with one byte changed, or not at all) and counts the requests it answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import OFFICIAL_WEIGHTS, REPO, SHARED_DATA, RunIf, run_cli
from pairlie.errors import DataError
from pairlie.infer.enhancer import Enhancer
from pairlie.model import weights
from pairlie.model.checkpoints import load_net
from pairlie.train.runs import resolve_checkpoint

NEEDS_SHARED = RunIf(shared=True)


class _Server:
    """What the loopback server serves (``mode``) and the paths it was asked for."""

    def __init__(self, mode: str):
        self.mode, self.requests = mode, []
        self.body = OFFICIAL_WEIGHTS.read_bytes() if OFFICIAL_WEIGHTS.is_file() else b""


def _handler(server: _Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            server.requests.append(self.path)
            body = server.body
            if server.mode == "missing":
                self.send_error(404)
                return
            if server.mode == "corrupt":  # same length, one byte changed
                body = body[:1000] + bytes([body[1000] ^ 0xFF]) + body[1001:]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))  # the whole length, even when cut short
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if server.mode == "truncated" else body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def _serve(mode: str = "ok"):
    state = _Server(mode)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/weights/PairLIE.pth", state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def refused_url():
    """A URL on a port this test holds without listening: connections are refused (no other test can take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/weights/PairLIE.pth"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch, refused_url) -> Path:
    """The weights cache of this test; the URL points nowhere until a test serves one."""
    folder = tmp_path / "cache" / "weights"
    monkeypatch.setenv(weights.DIR_VARIABLE, str(folder))
    monkeypatch.setenv(weights.URL_VARIABLE, refused_url)
    return folder


@NEEDS_SHARED
def test_the_published_checksum_and_size_are_those_of_the_shared_copy():
    data = OFFICIAL_WEIGHTS.read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (weights.SIZE, weights.SHA256)
    assert weights.URL.endswith(f"zhenqifu/PairLIE/{weights.COMMIT}/weights/PairLIE.pth")


def test_the_docs_state_the_address_size_and_checksum_pairlie_checks():
    text = (REPO / "docs" / "data-and-weights.md").read_text()
    assert weights.URL in text and weights.SHA256 in text and f"{weights.SIZE:,} bytes" in text
    assert "states no licence" in text


def test_the_cache_follows_the_demo_sets_convention(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.DIR_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.weights_dir() == tmp_path / "xdg" / "pairlie" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.weights_dir() == tmp_path / "home" / ".cache" / "pairlie" / "weights"


@NEEDS_SHARED
def test_a_first_use_downloads_checks_and_caches_and_later_uses_ask_nothing(cache, monkeypatch):
    with _serve() as (url, server):
        monkeypatch.setenv(weights.URL_VARIABLE, url)
        path = resolve_checkpoint(OmegaConf.create({"ckpt_path": "official"}))
        assert path == cache / "PairLIE.pth"
        assert path.read_bytes() == OFFICIAL_WEIGHTS.read_bytes()
        assert server.requests == ["/weights/PairLIE.pth"]
        assert sorted(p.name for p in cache.iterdir()) == ["PairLIE.pth"]  # no temporary file left
        # later uses: the checked file, no request
        enhancer = Enhancer.from_pretrained()
        assert Enhancer.from_checkpoint("official").gamma == enhancer.gamma
        assert weights.official_weights() == path
        assert len(server.requests) == 1
    reference, _ = load_net(OFFICIAL_WEIGHTS)
    for (name, ours), theirs in zip(enhancer.net.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(ours.cpu().float(), theirs.float()), name


@NEEDS_SHARED
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("truncated", f"holds 688,741 bytes, not {weights.SIZE:,}"),
        ("corrupt", "has sha256 "),
        ("missing", "answered HTTP 404"),
    ],
)
def test_a_bad_download_is_one_line_and_leaves_nothing_in_the_cache(cache, monkeypatch, mode, reason):
    with _serve(mode) as (url, server):
        monkeypatch.setenv(weights.URL_VARIABLE, url)
        with pytest.raises(DataError) as info:
            weights.official_weights()
    message = str(info.value)
    assert "\n" not in message and reason in message, message
    assert url in message and weights.SHA256 in message and str(cache / "PairLIE.pth") in message
    assert server.requests == ["/weights/PairLIE.pth"]
    assert not (cache / "PairLIE.pth").exists()
    assert list(cache.iterdir()) == []  # nor a temporary file


def test_offline_is_one_line_naming_the_url_the_checksum_and_where_to_put_the_file(cache):
    with pytest.raises(DataError) as info:
        Enhancer.from_pretrained()
    message = str(info.value)
    assert "\n" not in message and "cannot reach" in message, message
    assert weights.weights_url() in message and weights.SHA256 in message and str(cache / "PairLIE.pth") in message
    assert not (cache / "PairLIE.pth").exists()
    assert cache.is_dir() and not list(cache.iterdir())  # the folder the message names, ready for the file


@NEEDS_SHARED
def test_a_wrong_file_in_the_cache_is_named_and_kept(cache, monkeypatch):
    cache.mkdir(parents=True)
    (cache / "PairLIE.pth").write_bytes(b"not the weights")
    with _serve() as (url, server):
        monkeypatch.setenv(weights.URL_VARIABLE, url)
        with pytest.raises(DataError, match=r"PairLIE.pth has sha256 [0-9a-f]{64}, not the published e223ec9e"):
            weights.official_weights()
        assert server.requests == []
    assert (cache / "PairLIE.pth").read_bytes() == b"not the weights"


@NEEDS_SHARED
def test_a_file_put_there_by_hand_is_used_without_a_download(cache):
    cache.mkdir(parents=True)
    (cache / "PairLIE.pth").write_bytes(OFFICIAL_WEIGHTS.read_bytes())
    assert weights.official_weights() == cache / "PairLIE.pth"  # the URL points at a closed port


@RunIf(clis=("pairlie-enhance",), shared=True)
def test_enhance_with_official_from_an_empty_folder_equals_enhance_with_the_file(tmp_path):
    photo = SHARED_DATA / "LOL-test" / "low" / "1.png"
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = tmp_path / "cache"
    with _serve() as (url, server):
        env = {weights.URL_VARIABLE: url, weights.DIR_VARIABLE: str(cache)}
        official = run_cli("pairlie-enhance", "ckpt_path=official", f"input={photo}", "output=out", cwd=empty, env=env)
        assert official.returncode == 0, official.stderr
        assert server.requests == ["/weights/PairLIE.pth"]
    by_file = run_cli(
        "pairlie-enhance",
        f"ckpt_path={OFFICIAL_WEIGHTS}",
        f"input={photo}",
        f"output={tmp_path / 'by_file'}",
        cwd=tmp_path,
    )
    assert by_file.returncode == 0, by_file.stderr
    ours, theirs = empty / "out" / "1.png", tmp_path / "by_file" / "1.png"
    assert ours.read_bytes() == theirs.read_bytes()
    assert (cache / "PairLIE.pth").read_bytes() == OFFICIAL_WEIGHTS.read_bytes()


@RunIf(clis=("pairlie-enhance",), shared=True)
def test_enhance_offline_is_one_line_and_no_output(tmp_path, refused_url):
    photo = SHARED_DATA / "LOL-test" / "low" / "1.png"
    env = {weights.URL_VARIABLE: refused_url, weights.DIR_VARIABLE: str(tmp_path / "cache")}
    result = run_cli("pairlie-enhance", "ckpt_path=official", f"input={photo}", "output=out", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path=official: cannot reach http://127.0.0.1:"), lines
    assert weights.SHA256 in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "PairLIE.pth").exists()
