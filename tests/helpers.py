"""What the tests share: the ../shared data, the installed CLIs, one skip marker, synthetic data, tiny runs.

Fixtures built on these live in conftest.py; test files import the plain helpers from here
(``from helpers import ...``) and never from each other.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
OFFICIAL_WEIGHTS = SHARED / "weights" / "PairLIE.pth"
BIN = Path(sys.executable).parent
SWEEP_PLUGINS = {
    "submitit": "hydra_plugins.hydra_submitit_launcher",
    "optuna": "hydra_plugins.hydra_optuna_sweeper",
}


# the user documentation whose command blocks are checked: the README and the site's pages
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code_blocks(path: Path, language: str) -> list[str]:
    """The text of every fenced ```language block of a Markdown file."""
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def documented_commands(files: list[Path] = DOC_FILES) -> list[tuple[str, list[str]]]:
    """``(file name, words)`` of every line of the files' ```bash blocks, split as a shell would (comments dropped).

    A leading ``srun`` (a SLURM launch of the command that follows) is dropped: the command is what is checked.
    """
    commands = []
    for path in files:
        for block in code_blocks(path, "bash"):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if words[:1] == ["srun"]:
                    words = words[1:]
                if words:
                    commands.append((path.name, words))
    return commands


def undocumented(keys, page: str = "outputs.md") -> list[str]:
    """The ``keys`` (of a result file a test made) that ``docs/<page>`` does not name in backticks."""
    text = (REPO / "docs" / page).read_text()
    return [key for key in dict.fromkeys(keys) if f"`{key}`" not in text]


def cli(name: str) -> str | None:
    """The console script ``name`` of the pairlie installed beside this interpreter, else None.

    Only this environment's bin/ is searched: a ``pairlie-train`` elsewhere on PATH belongs to
    another install, whose results would say nothing about this checkout.
    """
    return shutil.which(name, path=str(BIN))


def RunIf(  # a marker factory, named like Lightning's
    *,
    clis: tuple[str, ...] = (),
    shared: bool = False,
    cuda: bool = False,
    mps: bool = False,
    linux: bool = False,
    sweep: tuple[str, ...] = (),
    chromium: bool = False,
) -> pytest.MarkDecorator:
    """One skip marker for what a test needs, as Lightning's ``RunIf``: ``@RunIf(clis=("pairlie-train",), shared=True)``.

    ``clis``: console scripts installed beside this interpreter; ``shared``: the data and official
    weights in ../shared; ``sweep``: Hydra plugins of ``pairlie[sweep]`` ("submitit", "optuna").
    """
    missing = [f"{name} is not installed (pip install -e .)" for name in clis if cli(name) is None]
    if shared and not (SHARED_DATA.is_dir() and OFFICIAL_WEIGHTS.is_file()):
        missing.append(f"needs the shared data and weights at {SHARED} (present in CI, absent in a user's clone)")
    if cuda and not torch.cuda.is_available():
        missing.append("needs a CUDA GPU (none on the project's CI)")
    if mps and not torch.backends.mps.is_available():
        missing.append("needs an Apple GPU (MPS); none on the project's CI")
    if linux and not sys.platform.startswith("linux"):
        missing.append("needs Linux (glibc)")
    for plugin in sweep:
        if importlib.util.find_spec(SWEEP_PLUGINS[plugin]) is None:
            missing.append(f'needs pip install "pairlie[sweep]" ({SWEEP_PLUGINS[plugin].split(".")[1]})')
    if chromium and chromium_path() is None:
        missing.append("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "has what it needs")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def installed(name: str) -> str:
    """The path of the console script ``name`` beside this interpreter; fails the test where it is missing."""
    path = cli(name)
    if path is None:
        pytest.fail(f"{name} is not installed beside {sys.executable}; mark the test @RunIf(clis=({name!r},))")
    return path


def run_cli(name: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 900):
    """Run the console script ``name`` installed beside this interpreter, from ``cwd``; ``env`` adds to this process's."""
    return subprocess.run(
        [installed(name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# --- synthetic data -------------------------------------------------------------------------------


def write_image(path: Path, size=(48, 40), seed: int = 0, scale: float = 1.0) -> Path:
    """A random RGB image of ``size`` (W, H) at ``path``, brightness scaled by ``scale``."""
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255 * scale).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_scene_tree(root: Path, scenes=("51", "7", "200"), exposures=3, size=(48, 40)) -> Path:
    """A training root with one folder per scene, each holding ``exposures`` images of one size."""
    for s, name in enumerate(scenes):
        for k in range(exposures):
            write_image(root / name / f"{name}_{k + 1}.png", size, seed=10 * s + k, scale=0.2 + 0.1 * k)
    return root


def make_paired_tree(root: Path, names=("a.png", "b.png"), size=(48, 40)) -> Path:
    """A test folder with low/ and high/ holding images of the same names."""
    for i, name in enumerate(names):
        write_image(root / "low" / name, size, seed=i, scale=0.2)
        write_image(root / "high" / name, size, seed=i)
    return root


def save_tiny_checkpoint(path: Path, width: int = 4, gamma: float = 0.2, seed: int = 0, sharpen: float = 1.0) -> Path:
    """A checkpoint in pairlie's Lightning layout (state_dict under ``net.``, hyper-parameters) with random weights.

    ``sharpen`` multiplies every conv weight: at 4 the outputs keep the input's texture instead of
    coming out nearly flat.
    """
    from pairlie.train.module import PairLIEModule

    torch.manual_seed(seed)
    module = PairLIEModule(width=width, gamma=gamma)
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.mul_(sharpen)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


class ExposurePairs(torch.utils.data.Dataset):
    """Item ``i``: two random 16x16 exposures fixed by ``i``, the second times ``darker``; items in ``poisoned`` carry one NaN pixel."""

    def __init__(self, poisoned=(), n: int = 8, darker: float = 1.0):
        self.poisoned, self.n, self.darker = set(poisoned), n, darker

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        im1, im2 = torch.rand(3, 16, 16, generator=gen), torch.rand(3, 16, 16, generator=gen) * self.darker
        if i in self.poisoned:
            im1[0, 0, 0] = float("nan")
        return im1, im2


# --- configs and training runs --------------------------------------------------------------------

# a real pairlie-train run in seconds: the debug preset's narrow nets and few steps, width 4, no logger, no demo set
TINY = ["debug=quick", "model.width=4", "logger=none", "callbacks.rich_progress_bar=null", "data.demo_root=null"]


def composed(*overrides: str, config: str = "train", hydra: bool = True):
    """The config ``config`` composed with ``overrides``, as its CLI would (with the hydra node unless ``hydra=False``)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="pairlie.configs", version_base="1.3"):
        return compose(config_name=config, overrides=list(overrides), return_hydra_config=hydra)


def cpu_trainer(steps: int, **kwargs):
    """A bare Lightning Trainer on the CPU for ``steps`` steps: no logger, checkpoints, bar or summary."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def run_train(cfg):
    """Call train() as the Hydra app does: the hydra node registered, then removed from the task config."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from pairlie.train.fit import train

    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return train(cfg)


def train_args(scene_tree: Path, paired_tree: Path, run: Path | None, *extra: str) -> list[str]:
    """``pairlie-train`` arguments on the synthetic folders, 60 steps an epoch, into ``run`` (None: Hydra's folder)."""
    return [
        "model.width=4",
        "data.patch_size=32",
        "trainer.accelerator=cpu",
        "logger=none",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        f"data.train_dir={scene_tree}",
        f"data.val_dir={paired_tree}",
        "data.demo_root=null",
        "data.repeats=20",
        *([f"hydra.run.dir={run}"] if run is not None else []),
        *extra,
    ]


def sweep(tmp_path: Path, scene_tree: Path, paired_tree: Path, *args: str):
    """A multirun as users type it (no hydra.sweep.dir), from ``tmp_path``; the result and its sweep folder."""
    result = run_cli(
        "pairlie-train", "-m", *args, *TINY, f"data.train_dir={scene_tree}", f"data.val_dir={paired_tree}", cwd=tmp_path
    )
    folders = list((tmp_path / "logs" / "train" / "multiruns").glob("*"))
    return result, folders[0] if len(folders) == 1 else None


STARTED: list[subprocess.Popen] = []  # what start() started, for conftest.py to kill after each test


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell starts background jobs (`cmd &`, nohup, a CI runner's children) with SIGINT ignored, and
    # a Python started that way never raises KeyboardInterrupt: Ctrl-C as the user presses it needs
    # the default disposition back. Runs in the child between fork and exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start the console script ``name`` in the background (to signal it while it runs), its output captured as text.

    It gets SIGINT as a terminal gives it, whatever the tests themselves were started with. One still
    running when its test ends (a failed assertion, a timeout) is killed then (conftest.py).
    """
    proc = subprocess.Popen(
        [installed(name), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    STARTED.append(proc)
    return proc


def checkpoint_step(ckpt: Path) -> int:
    """The global step a Lightning checkpoint was saved at."""
    return torch.load(ckpt, weights_only=False)["global_step"]


def wait_for(event: Path | Callable[[], bool], proc: subprocess.Popen, timeout: float = 300, what: str = "") -> None:
    """Wait until ``event`` (a file appearing, or a condition) happens while ``proc`` runs; fail if it exits first.

    The timeout is a deadlock guard, far above what the event takes even on a loaded machine.
    """
    happened = event.exists if isinstance(event, Path) else event
    deadline = time.monotonic() + timeout
    while not happened():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited ({proc.returncode}) before {what or event}:\n{out[-1000:]}\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what or event}: did not happen within {timeout} s")
        time.sleep(0.1)


@functools.cache
def exact_pass(folder: str, every: int, gamma: float) -> tuple[tuple[Path, torch.Tensor], ...]:
    """The fp32 exact path's enhanced image (1×3×H×W float) of every ``every``-th low image of a ../shared test set.

    Computed once per test session: the bf16, int8 and Winograd tests all compare against it.
    """
    from pairlie.infer.enhancer import Enhancer
    from pairlie.io.images import read_rgb, to_tensor

    exact = Enhancer.from_checkpoint(OFFICIAL_WEIGHTS, gamma=gamma, device="cpu", conv="direct", precision="fp32")
    lows = sorted((SHARED_DATA / folder / "low").iterdir())[::every]
    return tuple((low, exact.decompose(to_tensor(read_rgb(low)[0])).enhanced) for low in lows)


@functools.cache
def exact_scores(folder: str, every: int, gamma: float) -> tuple[float, float, int]:
    """Mean paper-protocol (PSNR, SSIM) of :func:`exact_pass` against the references, and the image count."""
    from pairlie.evaluate.metrics import paper_scores
    from pairlie.io.images import read_rgb, to_uint8

    scores = [
        paper_scores(enhanced[0], to_uint8(read_rgb(low.parent.parent / "high" / low.name)[0]))
        for low, enhanced in exact_pass(folder, every, gamma)
    ]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores])), len(scores)
