"""The documentation checked like code: the site builds strictly, every command names what exists, the
configuration reference matches the configs, the built site works in a real browser, the demo row is true.

The pairlie-* commands of the README and docs/*.md are composed by tests/test_first_hour.py; the
other lines of their bash blocks are checked here.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import importlib.util
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import DOC_FILES, REPO, RunIf, chromium_path, code_blocks, composed, documented_commands, run_cli
from pairlie.configuration import group_options, leaf_keys

pytestmark = pytest.mark.xdist_group("site")  # one documentation site per session (conftest.site)

DOCS = REPO / "docs"
README = REPO / "README.md"
PAIRLIE_CLIS = {"pairlie-train", "pairlie-test", "pairlie-enhance", "pairlie-export"}
NEEDS_MKDOCS = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason='needs MkDocs and Material for MkDocs: pip install -e ".[docs]" (make setup installs them)',
)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _mkdocs_config() -> dict:
    # mkdocs.yml holds no Python tags: a plain YAML read
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


# --- what the pages say ---------------------------------------------------------------------------


def test_the_readme_fits_on_two_screens_and_links_to_pages_that_exist():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(set(links)) >= 10 and all((REPO / link).is_file() for link in links), links


def test_every_page_is_in_the_navigation_and_the_own_model_page_is_there():
    pages = _nav_pages(_mkdocs_config()["nav"])
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md"))
    assert "your-own-model.md" in pages and (DOCS / "your-own-model.md").read_text().startswith("# Your own model\n")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_user_docs_name_public_data_not_this_repository_s_setup(path):
    text = path.read_text()
    assert "../shared" not in text and "shared/data" not in text


def test_the_results_table_is_the_same_on_the_readme_and_the_home_page():
    def table(text: str) -> list[str]:
        lines = text.splitlines()
        start = lines.index("| | PSNR (dB) | SSIM |")
        return lines[start : start + next(i for i, line in enumerate(lines[start:]) if not line.startswith("|"))]

    assert table(README.read_text()) == table((DOCS / "index.md").read_text())


@pytest.mark.parametrize(
    ("path", "block"),
    [(p, b) for p in DOC_FILES for b in code_blocks(p, "python")],
    ids=lambda x: x.name if isinstance(x, Path) else x.splitlines()[0][:40],
)
def test_every_python_block_compiles(path, block):
    compile(block, f"{path.name} python block", "exec")


# --- every command line names what exists --------------------------------------------------------


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))


def _extras() -> set[str]:
    text = (REPO / "pyproject.toml").read_text()  # no tomllib before Python 3.11
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, flags=re.M))


def _script_options(script: Path) -> set[str]:
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text()))


def _environment_names() -> set[str]:
    text = "\n".join(p.read_text() for p in [*(REPO / "configs").rglob("*.yaml"), *(REPO / "src").rglob("*.py")])
    return set(re.findall(r"\bPAIRLIE_[A-Z_]+\b", text))


def check_command(words: list[str]) -> None:
    """Fail unless the command line names things that exist: make targets, extras, scripts and their options, ..."""
    head = words[0]
    if head == "make":
        assert set(words[1:]) <= _make_targets(), f"no such make target: {words}"
    elif head in (".", "source"):
        assert words[1:] == [".venv/bin/activate"], words
    elif head == "pip" and words[1:2] == ["install"]:
        for word in words[2:]:
            extras = re.search(r"\[([\w,]+)\]", word)
            if extras:
                assert set(extras.group(1).split(",")) <= _extras(), f"no such extra: {word}"
            if word.startswith("torch=="):
                assert word.split("==")[1] in (REPO / "Makefile").read_text(), f"not the tested torch: {word}"
    elif head == "python" and words[1:2] == ["-m"]:
        module = words[2]
        if module == "pytest":
            assert all((REPO / w).exists() for w in words[3:] if w.startswith("tests/")), words
        else:
            assert importlib.util.find_spec(module) is not None, f"no module {module}"
    elif head == "python":
        script = REPO / words[1]
        assert script.is_file(), f"no script {words[1]}"
        options = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
        assert options <= _script_options(script), f"{words[1]} takes no {options - _script_options(script)}"
    elif head == "export":
        names = {w.split("=")[0] for w in words[1:]}
        assert names <= _environment_names(), f"pairlie reads no {names - _environment_names()}"
    elif head == "cd":  # into a copy of an example folder, as the docs say to make one
        assert len(words) == 2 and (REPO / "examples" / words[1]).is_dir(), f"no example folder {words[1:]}"
    elif head in ("mkdocs", "tensorboard"):
        assert importlib.util.find_spec("mkdocs" if head == "mkdocs" else "tensorboard") is not None
    else:
        pytest.fail(f"no check for this documented command: {' '.join(words)} (add one to tests/test_docs.py)")


OTHER_COMMANDS = [(name, words) for name, words in documented_commands() if words[0] not in PAIRLIE_CLIS]


@pytest.mark.parametrize(("file", "words"), OTHER_COMMANDS, ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_every_other_documented_command_names_what_exists(file, words):
    if words[0] == "mkdocs":
        pytest.importorskip("mkdocs", reason='pip install -e ".[docs]"')
    check_command(words)


@pytest.mark.parametrize(
    "words",
    [
        ["make", "tests"],
        ["pip", "install", '-e ".[sweeps]"'],
        ["python", "scripts/benchmark.py", "--quik"],
        ["python", "-m", "pairlie.sweeps"],
        ["export", "PAIRLIE_LOGDIR=/x"],
        ["rm", "-rf", "logs"],
    ],
)
def test_a_mistake_in_a_documented_command_would_fail(words):
    with pytest.raises(pytest.fail.Exception if words[0] == "rm" else AssertionError):
        check_command(words)


# --- the configuration reference -----------------------------------------------------------------


def test_the_configuration_reference_is_generated_from_the_current_configs():
    generated = _load_script("config_reference").render()
    assert (DOCS / "configuration.md").read_text() == generated, (
        "docs/configuration.md differs from the configs: run python scripts/config_reference.py --write"
    )


def _compositions():
    yield "train", []
    for group in ("data", "trainer", "logger", "callbacks", "experiment", "debug"):
        for choice in group_options(group):
            yield "train", [f"{group}={choice}"]
    for config in ("test", "enhance", "export"):
        yield config, []


@pytest.mark.parametrize(("config", "overrides"), list(_compositions()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_key_of_every_composed_config_is_in_the_reference(config, overrides):
    page = (DOCS / "configuration.md").read_text()
    cfg = composed(*overrides, config=config, hydra=False)
    missing = [key for key in leaf_keys(cfg) if f"`{key}`" not in page and f"`{key}=" not in page]
    assert not missing, f"not in docs/configuration.md: {missing}"


# --- the built site --------------------------------------------------------------------------------


@NEEDS_MKDOCS
def test_mkdocs_builds_the_site_strictly_with_every_page_and_the_api_reference(site):
    for page in _nav_pages(_mkdocs_config()["nav"]):
        name = page[: -len(".md")]
        assert (site / ("index.html" if name == "index" else f"{name}/index.html")).is_file(), page
    api = (site / "api" / "index.html").read_text()
    # rendered from the docstrings: the Enhancer's own first line
    assert 'id="pairlie.Enhancer"' in api and "from_checkpoint" in api


@NEEDS_MKDOCS
def test_the_search_index_holds_the_pages_words(site):
    index = json.loads((site / "search" / "search_index.json").read_text())
    hits = {doc["location"].split("#")[0] for doc in index["docs"] if "overridable initializer" in doc["text"]}
    assert "deploying/" in hits


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(folder: Path):
    """The folder over HTTP on 127.0.0.1, on a free port, for the duration of the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class DevTools:
    """A minimal Chrome DevTools Protocol client over one WebSocket (standard library only)."""

    def __init__(self, ws_url: str, timeout: float = 60):
        host_port, path = ws_url[len("ws://") :].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self._exact(1)
        assert b" 101 " in response.split(b"\r\n")[0], response
        self.last_id = 0

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            data += chunk
        return data

    def _send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        assert n < 65536
        self.sock.sendall(bytes([0x81]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _receive(self) -> str:
        message = b""
        while True:
            first, second = self._exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            message += self._exact(n)
            if first & 0x80:
                return message.decode()

    def call(self, method: str, **params):
        self.last_id += 1
        self._send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._receive())
            if reply.get("id") == self.last_id:
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page; a Promise is awaited."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result["result"].get("value")

    def wait(self, ready: str, timeout: float = 30) -> None:
        """Wait until the page has loaded and the expression ``ready`` is true in it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.evaluate(f"document.readyState === 'complete' && ({ready})"):
                    return
            except AssertionError:  # the page navigated away while evaluating: ask again
                pass
            assert time.monotonic() < deadline, f"{ready}: not true within {timeout} s"
            time.sleep(0.1)

    def open(self, url: str, ready: str, timeout: float = 30) -> None:
        """Navigate to ``url`` and wait until the expression ``ready`` is true in it."""
        self.call("Page.navigate", url=url)
        self.wait(f"location.href === {url!r} && {ready}", timeout)


@contextlib.contextmanager
def _browser(profile: Path):
    """Headless Chromium with its DevTools endpoint; the page it opened, as a DevTools client."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    proc = subprocess.Popen(
        [chromium_path(), *flags, f"--remote-debugging-port={port}", f"--user-data-dir={profile}"]
        + ["--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
                page = next(t for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration):
                assert proc.poll() is None and time.monotonic() < deadline, "Chromium did not start its DevTools"
                time.sleep(0.2)
        devtools = DevTools(page["webSocketDebuggerUrl"])
        devtools.call("Page.enable")
        yield devtools
    finally:
        proc.kill()
        proc.wait(timeout=30)


SEARCH = """new Promise((resolve) => {
  const input = document.querySelector('input[data-md-component="search-query"]');
  input.focus();
  input.value = %s;
  input.dispatchEvent(new Event('input', {bubbles: true}));
  input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true}));
  const started = Date.now();
  (function poll() {
    // results of this query carry it in their highlight parameter (?h=); none: Material says so in the meta line
    const links = [...document.querySelectorAll('.md-search-result__item a')].map(a => a.href);
    const meta = document.querySelector('.md-search-result__meta').textContent;
    if (links.some(href => href.includes('h=' + input.value.toLowerCase()))) resolve(links);
    else if (meta.includes('No matching') || Date.now() - started > 20000) resolve(meta);
    else setTimeout(poll, 100);
  })();
})"""


@NEEDS_MKDOCS
@RunIf(chromium=True)
def test_the_site_in_a_browser_renders_navigates_and_searches(site, tmp_path):
    pages = _nav_pages(_mkdocs_config()["nav"])
    with _serve(site) as root, _browser(tmp_path / "profile") as browser:
        browser.open(root, "document.querySelector('h1') !== null")
        assert browser.evaluate("document.querySelector('h1').firstChild.textContent") == "pairlie"
        assert browser.evaluate("document.querySelectorAll('table tr').length") >= 10  # the results table
        nav = browser.evaluate(
            "[...document.querySelectorAll('nav.md-nav--primary a.md-nav__link')].map(a => a.getAttribute('href'))"
        )
        assert {href.split("#")[0] for href in nav} >= {"."} | {f"{p[: -len('.md')]}/" for p in pages[1:]}, nav

        shot = tmp_path / "home.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
        with Image.open(shot) as image:
            assert image.width == 1280 and np.asarray(image.convert("L")).std() > 20  # text and a header, not blank

        # a deep page, through its navigation link: the configuration reference's generated tables
        browser.evaluate(
            "[...document.querySelectorAll('a.md-nav__link')].find(a => a.textContent.trim() === 'Configuration').click()"
        )
        browser.wait(f"location.href === '{root}configuration/' && document.querySelector('h1') !== null")
        assert browser.evaluate("document.querySelector('h1').textContent").startswith("Configuration reference")
        assert browser.evaluate("document.querySelectorAll('td code').length") > 100
        assert browser.evaluate("document.body.innerText.includes('model.loss.fidelity')")

        # search: Material's worker loads search/search_index.json and lists the pages that hold the word
        found = browser.evaluate(SEARCH % json.dumps("overridable"))
        assert any(href.startswith(f"{root}deploying/") for href in found), found
        shot = tmp_path / "search.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
        assert shot.stat().st_size > 10_000
        assert browser.evaluate(SEARCH % json.dumps("zzqxnotaword")) == "No matching documents"


# --- the README's demo row is what the current code gives ---------------------------------------------


@pytest.mark.slow
@RunIf(clis=("pairlie-train",))
def test_the_demo_row_of_the_results_table_is_what_make_demo_gives(tmp_path):
    """``make demo`` is ``pairlie-train`` with no arguments: train the demo and compare with the table's row."""
    row = next(line for line in README.read_text().splitlines() if line.startswith("| demo set"))
    (psnr_in, psnr_out), (ssim_in, ssim_out) = [
        (float(a), float(b)) for a, b in re.findall(r"([\d.]+) → ([\d.]+)", row)
    ]
    result = run_cli("pairlie-train", "logger=none", cwd=tmp_path, timeout=3600)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "val_metrics.json").read_text())
    # the input's scores are fixed by the demo set; training on another CPU moves the output's slightly
    assert abs(metrics["val/input_psnr"] - psnr_in) <= 0.005 and abs(metrics["val/input_ssim"] - ssim_in) <= 0.0005
    assert abs(metrics["val/psnr"] - psnr_out) <= 0.1, (metrics, row)
    assert abs(metrics["val/ssim"] - ssim_out) <= 0.005, (metrics, row)
