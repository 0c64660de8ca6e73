"""Shared fixtures: tiny synthetic image folders, checkpoints, nets and composed configs (plain helpers: helpers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, STARTED, composed, make_paired_tree, make_scene_tree, save_tiny_checkpoint
from pairlie.infer.precision import FLAGS_VARIABLE
from pairlie.model.nets import PairLIENet


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker takes its share of the cores.

    Two workers each running torch on every core slow each other several times over (their thread
    pools spin against each other), so a worker's torch, and the CLI processes it starts, get
    cores / workers threads.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Under xdist, the minutes-long tests first, so that none of them starts last and leaves a worker idle.

    One process keeps the files' order (``pytest -x tests/test_docs.py`` runs the quick tests first).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike: their collections must agree
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _no_background_run_outlives_its_test():
    """Kill what ``helpers.start`` started and a failing test left running (a run trained on for an hour once)."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(autouse=True)
def _no_ddp_port_outlives_its_test(monkeypatch):
    """Lightning's ddp_spawn writes MASTER_PORT into this process's environment; later runs would reuse it."""
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _a_cpu_without_native_bf16(monkeypatch):
    """Every test sees an AVX2-only CPU (precision=auto is fp32), in its CLI processes too, whatever CPU runs it.

    Tests of bf16 and of the detection ask for them by name or set the flags themselves.
    """
    monkeypatch.setenv(FLAGS_VARIABLE, "avx avx2 fma")


@pytest.fixture
def scene_tree(tmp_path: Path) -> Path:
    return make_scene_tree(tmp_path / "train")


@pytest.fixture
def paired_tree(tmp_path: Path) -> Path:
    return make_paired_tree(tmp_path / "val")


@pytest.fixture
def tiny_cfg(tmp_path: Path, scene_tree: Path, paired_tree: Path):
    """A composed train config on the synthetic folders: width 4, 32x32 crops, CPU, a few steps."""

    def make(*overrides: str):
        return composed(
            f"data.train_dir={scene_tree}",
            f"data.val_dir={paired_tree}",
            "data.demo_root=null",
            "data.patch_size=32",
            "data.batch_size=1",
            "data.repeats=1",
            "model.width=4",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "trainer.log_every_n_steps=1",
            "callbacks.rich_progress_bar=null",
            "callbacks.model_summary=null",
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            *overrides,
        )

    return make


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "tiny.ckpt")


@pytest.fixture
def sharp_net():
    """A small net with weights large enough that its outputs depend strongly on every input pixel."""
    torch.manual_seed(0)
    net = PairLIENet(width=8).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(4.0)
        out = net(torch.rand(1, 3, 32, 32))
    assert min(t.std().item() for t in out) > 0.02  # the comparisons using it are not between constants
    return net


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The documentation site, built once per run with ``mkdocs build --strict`` (tests skip without MkDocs)."""
    pytest.importorskip("mkdocs", reason='pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out
