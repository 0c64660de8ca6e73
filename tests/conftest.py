"""Shared fixtures: the ../shared data beside the repo, tiny synthetic image folders, Hydra composition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from pairlie.nets import PairLIENet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
OFFICIAL_WEIGHTS = SHARED / "weights" / "PairLIE.pth"

needs_shared = pytest.mark.skipif(
    not (SHARED_DATA.is_dir() and OFFICIAL_WEIGHTS.is_file()),
    reason=f"needs the shared data and weights at {SHARED} (present in CI, absent in a user's clone)",
)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the project's CI)")


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
        with initialize_config_module(config_module="pairlie.configs", version_base="1.3"):
            cfg = compose(
                config_name="train",
                return_hydra_config=True,
                overrides=[
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
                ],
            )
        return cfg

    return make


def save_tiny_checkpoint(path: Path, width: int = 4, gamma: float = 0.2, seed: int = 0) -> Path:
    """A checkpoint in pairlie's Lightning layout (state_dict under ``net.``, hyper-parameters) with random weights."""
    from pairlie.module import PairLIEModule

    torch.manual_seed(seed)
    module = PairLIEModule(width=width, gamma=gamma)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


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
