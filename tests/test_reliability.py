"""Faults: NaN steps, SIGTERM, SIGKILL, re-used run folders; nothing finished is lost."""

import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import (
    ExposurePairs,
    RunIf,
    checkpoint_step,
    cpu_trainer,
    run_cli,
    run_train,
    start,
    train_args,
    wait_for,
)
from pairlie.errors import TrainingDiverged
from pairlie.train.module import PairLIEModule


def fit(module, poisoned, steps=6):
    trainer = cpu_trainer(steps)
    trainer.fit(module, DataLoader(ExposurePairs(poisoned, n=6), batch_size=1, shuffle=False))
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


def _start_long_run(tmp_path, scene_tree, paired_tree, run) -> tuple[subprocess.Popen, Path, int]:
    """A training run of 1000 epochs, returned once it has written last.ckpt twice: it is past a checkpoint and
    training on; with the step of the second."""
    proc = start("pairlie-train", *train_args(scene_tree, paired_tree, run, "trainer.max_epochs=1000"), cwd=tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    first = checkpoint_step(last)
    wait_for(lambda: checkpoint_step(last) > first, proc, what=f"a second {last}")  # written by a rename: whole
    return proc, last, checkpoint_step(last)


def _resume_for(tmp_path, scene_tree, paired_tree, run, steps: int) -> int:
    """Resume ``run`` with ``ckpt_path=last`` for ``steps`` more steps; returns the final global step."""
    before = checkpoint_step(run / "checkpoints" / "last.ckpt")
    more = (f"trainer.max_steps={before + steps}", "ckpt_path=last")
    resumed = run_cli(
        "pairlie-train", *train_args(scene_tree, paired_tree, run, "trainer.max_epochs=1000", *more), cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return checkpoint_step(run / "checkpoints" / "last.ckpt")


@RunIf(clis=("pairlie-train",))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_say_how_to_resume(tmp_path, scene_tree, paired_tree, sig):
    run = tmp_path / "run"
    proc, last, second = _start_long_run(tmp_path, scene_tree, paired_tree, run)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    saved = checkpoint_step(last)
    kind = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert f"interrupted by {kind} at step {saved}: saved {last}" in out, err[-2000:]  # written at the interruption
    # the command to resume carries the run's own overrides: typed as printed, it continues this run
    printed = shlex.split(next(line for line in out.splitlines() if line.startswith("resume with: "))[13:])
    started = [
        a for a in train_args(scene_tree, paired_tree, run, "trainer.max_epochs=1000") if "hydra.run.dir" not in a
    ]
    assert printed[0] == "pairlie-train" and printed[-2:] == [f"hydra.run.dir={run}", "ckpt_path=last"], printed
    assert set(started) <= set(printed), printed
    assert f"resume with: {shlex.join(printed)}" in (run / "train.log").read_text()  # in the run's log too
    assert saved >= second
    assert _resume_for(tmp_path, scene_tree, paired_tree, run, 3) == saved + 3


@RunIf(clis=("pairlie-train",))
def test_a_resume_in_a_run_folder_with_other_data_or_model_settings_is_refused(tmp_path, scene_tree, paired_tree):
    # `ckpt_path=last` typed without the run's overrides (experiment=sice) carried a SICE run on with the
    # demo's data, into the SICE run's folder, over its last.ckpt
    run = tmp_path / "run"
    args = train_args(scene_tree, paired_tree, run, "trainer.max_steps=2", "data.repeats=1")
    assert run_cli("pairlie-train", *args, cwd=tmp_path).returncode == 0
    kept = (run / "checkpoints" / "last.ckpt").read_bytes()
    other = [a for a in args if not a.startswith("data.patch_size=")] + ["data.patch_size=24"]
    again = run_cli("pairlie-train", *other, "trainer.max_steps=4", "ckpt_path=last", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-2000:]
    line = again.stderr.strip().splitlines()[-1]
    assert "data.patch_size=32 (here 24)" in line and (run / "resume.txt").read_text().strip() in line
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == kept
    same = run_cli("pairlie-train", *args, "trainer.max_steps=3", "ckpt_path=last", cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-2000:]  # the run's own settings, a longer schedule: resumes


@RunIf(clis=("pairlie-train",))
def test_sigkill_leaves_a_loadable_checkpoint_to_resume_from(tmp_path, scene_tree, paired_tree):
    run = tmp_path / "run"
    proc, last, _ = _start_long_run(tmp_path, scene_tree, paired_tree, run)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not list((run / "checkpoints").glob("*.tmp*"))
    step = checkpoint_step(last)  # loads: never half-written
    assert _resume_for(tmp_path, scene_tree, paired_tree, run, 2) == step + 2


@RunIf(clis=("pairlie-train",))
def test_a_second_run_into_the_same_folder_refuses(tmp_path, scene_tree, paired_tree):
    run = tmp_path / "run"
    args = train_args(scene_tree, paired_tree, run, "trainer.max_steps=2", "data.repeats=1")
    assert run_cli("pairlie-train", *args, cwd=tmp_path).returncode == 0
    kept = (run / "checkpoints" / "last.ckpt").read_bytes()
    again = run_cli("pairlie-train", *args, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run's checkpoints" in again.stderr
    assert "ckpt_path=last" in again.stderr and "Traceback" not in again.stderr
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == kept
    past = run_cli(
        "pairlie-train",
        *train_args(scene_tree, paired_tree, run, "trainer.max_steps=1", "ckpt_path=last", "data.repeats=1"),
        cwd=tmp_path,
    )
    assert past.returncode == 2 and "nothing to train" in past.stderr and "Traceback" not in past.stderr
    missing = run_cli(
        "pairlie-train", *train_args(scene_tree, paired_tree, tmp_path / "other", "ckpt_path=last"), cwd=tmp_path
    )
    assert missing.returncode == 2 and "ckpt_path=last: no " in missing.stderr


@RunIf(clis=("pairlie-test",))
def test_a_second_test_run_into_the_same_folder_refuses(tmp_path, tiny_ckpt, paired_tree):
    args = [f"ckpt_path={tiny_ckpt}", f"data.test_dir={paired_tree}", f"hydra.run.dir={tmp_path / 'out'}"]
    assert run_cli("pairlie-test", *args, cwd=tmp_path).returncode == 0
    kept = (tmp_path / "out" / "metrics.json").read_text()
    again = run_cli("pairlie-test", *args, cwd=tmp_path)
    assert again.returncode == 2 and "earlier test run" in again.stderr and "overwrite=true" in again.stderr
    assert (tmp_path / "out" / "metrics.json").read_text() == kept


def test_disk_full_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(tiny_cfg, monkeypatch, capsys):
    import errno

    import fsspec.implementations.local as local

    from pairlie.cli.common import run_reporting_errors

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
    assert checkpoint_step(last) == 3  # the first epoch's checkpoint, whole
    assert not [p for p in last.parent.iterdir() if p.name not in ("last.ckpt",) and not p.name.startswith("epoch000")]
