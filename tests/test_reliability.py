"""Faults: NaN steps, SIGTERM, SIGKILL, re-used run folders; nothing finished is lost."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import cpu_trainer
from pairlie.errors import TrainingDiverged
from pairlie.module import PairLIEModule

TRAIN = shutil.which("pairlie-train", path=str(Path(sys.executable).parent))
TEST = shutil.which("pairlie-test", path=str(Path(sys.executable).parent))


class Pairs(torch.utils.data.Dataset):
    def __init__(self, poisoned: set[int], n: int = 6):
        self.poisoned, self.n = poisoned, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        im1, im2 = torch.rand(3, 16, 16, generator=gen), torch.rand(3, 16, 16, generator=gen)
        if i in self.poisoned:
            im1[0, 0, 0] = float("nan")
        return im1, im2


def fit(module, poisoned, steps=6):
    trainer = cpu_trainer(steps)
    trainer.fit(module, DataLoader(Pairs(poisoned), batch_size=1, shuffle=False))
    return trainer


def test_a_nan_step_is_skipped_and_counted():
    torch.manual_seed(0)
    module = PairLIEModule(width=4, nonfinite_patience=3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    fit(module, poisoned={0, 1}, steps=2)  # both steps poisoned, fewer than the patience
    assert module.nonfinite_total == 2
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # nothing was updated
    fit(module, poisoned={2}, steps=6)
    assert module.nonfinite_total == 3 and module.nonfinite_in_a_row == 0
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_too_many_in_a_row_stop_with_a_message():
    module = PairLIEModule(width=4, nonfinite_patience=3)
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row with a non-finite loss .*nonfinite_patience=3"):
        fit(module, poisoned=set(range(6)))


def test_a_nan_gradient_is_dropped_before_adam():
    module = PairLIEModule(width=4)
    optimizer = module.configure_optimizers()["optimizer"]
    for p in module.parameters():
        p.grad = torch.full_like(p, float("inf"))
    module.log = lambda *a, **k: None  # outside a Trainer
    module.on_before_optimizer_step(optimizer)
    assert all(p.grad is None for p in module.parameters()) and module.nonfinite_total == 1


def _train_cmd(tmp_path, scene_tree, paired_tree, run, *extra):
    return [
        TRAIN,
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
        f"hydra.run.dir={run}",
        *extra,
    ]


def _wait_for(path: Path, proc: subprocess.Popen, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=False)["global_step"]


def _start_long_run(tmp_path, scene_tree, paired_tree, run) -> tuple[subprocess.Popen, Path]:
    """A training run of 1000 epochs, returned once its first last.ckpt is on disk."""
    proc = subprocess.Popen(
        _train_cmd(tmp_path, scene_tree, paired_tree, run, "trainer.max_epochs=1000"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    _wait_for(last, proc)
    return proc, last


def _resume_for(tmp_path, scene_tree, paired_tree, run, steps: int) -> int:
    """Resume ``run`` with ``ckpt_path=last`` for ``steps`` more steps; returns the final global step."""
    start = _step(run / "checkpoints" / "last.ckpt")
    resumed = subprocess.run(
        _train_cmd(
            tmp_path,
            scene_tree,
            paired_tree,
            run,
            "trainer.max_epochs=1000",
            f"trainer.max_steps={start + steps}",
            "ckpt_path=last",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return _step(run / "checkpoints" / "last.ckpt")


@pytest.mark.skipif(TRAIN is None, reason="pairlie-train is not installed (pip install -e .)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_say_how_to_resume(tmp_path, scene_tree, paired_tree, sig):
    run = tmp_path / "run"
    proc, last = _start_long_run(tmp_path, scene_tree, paired_tree, run)
    first = _step(last)
    time.sleep(2.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    saved = _step(last)
    kind = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert f"interrupted by {kind} at step {saved}: saved {last}" in out  # written at the interruption
    assert f"pairlie-train hydra.run.dir={run} ckpt_path=last" in out
    assert saved >= first
    assert _resume_for(tmp_path, scene_tree, paired_tree, run, 3) == saved + 3


@pytest.mark.skipif(TRAIN is None, reason="pairlie-train is not installed (pip install -e .)")
def test_sigkill_leaves_a_loadable_checkpoint_to_resume_from(tmp_path, scene_tree, paired_tree):
    run = tmp_path / "run"
    proc, last = _start_long_run(tmp_path, scene_tree, paired_tree, run)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not list((run / "checkpoints").glob("*.tmp*"))
    step = _step(last)  # loads: never half-written
    assert _resume_for(tmp_path, scene_tree, paired_tree, run, 2) == step + 2


@pytest.mark.skipif(TRAIN is None, reason="pairlie-train is not installed (pip install -e .)")
def test_a_second_run_into_the_same_folder_refuses(tmp_path, scene_tree, paired_tree):
    run = tmp_path / "run"
    cmd = _train_cmd(tmp_path, scene_tree, paired_tree, run, "trainer.max_steps=2", "data.repeats=1")
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    kept = (run / "checkpoints" / "last.ckpt").read_bytes()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a run's checkpoints" in again.stderr
    assert "ckpt_path=last" in again.stderr and "Traceback" not in again.stderr
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == kept
    past = subprocess.run(
        _train_cmd(tmp_path, scene_tree, paired_tree, run, "trainer.max_steps=1", "ckpt_path=last", "data.repeats=1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert past.returncode == 2 and "nothing to train" in past.stderr and "Traceback" not in past.stderr
    missing = subprocess.run(
        _train_cmd(tmp_path, scene_tree, paired_tree, tmp_path / "other", "ckpt_path=last"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and "ckpt_path=last: no " in missing.stderr


@pytest.mark.skipif(TEST is None, reason="pairlie-test is not installed (pip install -e .)")
def test_a_second_test_run_into_the_same_folder_refuses(tmp_path, tiny_ckpt, paired_tree):
    cmd = [TEST, f"ckpt_path={tiny_ckpt}", f"data.test_dir={paired_tree}", f"hydra.run.dir={tmp_path / 'out'}"]
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=300).returncode == 0
    kept = (tmp_path / "out" / "metrics.json").read_text()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "earlier test run" in again.stderr and "overwrite=true" in again.stderr
    assert (tmp_path / "out" / "metrics.json").read_text() == kept


def test_disk_full_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(tiny_cfg, monkeypatch, capsys):
    import errno

    import fsspec.implementations.local as local

    from pairlie.cli.common import run_reporting_errors
    from test_train_cli import run_train

    cfg = tiny_cfg("trainer.max_epochs=3", "logger=none")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    real_write = local.LocalFileOpener.write

    def write(self, data):  # the disk fills up once the first epoch's checkpoints are down
        if last.exists():
            raise OSError(errno.ENOSPC, "No space left on device", str(last))
        return real_write(self, data)

    monkeypatch.setattr(local.LocalFileOpener, "write", write)
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(run_train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "No space left on device" in err and f"{last} is intact" in err
    assert _step(last) == 3  # the first epoch's checkpoint, whole
    assert not [p for p in last.parent.iterdir() if p.name not in ("last.ckpt",) and not p.name.startswith("epoch000")]
