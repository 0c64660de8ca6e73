"""Cluster jobs on a CPU: SLURM node counts, submitit, time-outs and requeues, one run folder per job."""

import json
import os
import signal

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from helpers import RunIf, checkpoint_step, composed, run_cli, run_train, start, sweep, train_args, wait_for
from pairlie.cli.common import run_reporting_errors

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_NNODES", "SLURM_JOB_NUM_NODES", "SLURM_RESTART_COUNT")


@pytest.fixture(autouse=True)
def no_cluster_environment(monkeypatch):
    for var in (*SLURM_VARS, "TORCHELASTIC_RUN_ID", "RANK", "SLURM_PROCID", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


# 3. multi-node SLURM: Lightning's node check and the launcher take one value
@RunIf(sweep=("submitit",))
def test_trainer_nodes_follow_the_launcher_preset_and_pass_lightnings_slurm_check(monkeypatch):
    monkeypatch.setenv("PAIRLIE_SLURM_NODES", "2")
    cfg = composed("hydra/launcher=slurm", "trainer=ddp")
    assert cfg.hydra.launcher.nodes == cfg.trainer.num_nodes == 2  # what sbatch is asked for, what Lightning expects
    # inside the job SLURM says how many nodes it gave; Lightning checks num_nodes against it
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    num_nodes = composed("trainer=ddp").trainer.num_nodes
    assert num_nodes == 2
    SLURMEnvironment().validate_settings(num_devices=4, num_nodes=num_nodes)
    with pytest.raises(ValueError, match="num_nodes=1"):
        SLURMEnvironment().validate_settings(num_devices=4, num_nodes=1)  # what trainer/ddp.yaml said before


def test_nodes_under_torchrun_come_from_its_world(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert composed("trainer=ddp").trainer.num_nodes == 2


# 4. submitit_local with trainer=ddp
@RunIf(clis=("pairlie-train",), sweep=("submitit",))
def test_ddp_under_the_submitit_local_launcher_trains(tmp_path, scene_tree, paired_tree):
    result, folder = sweep(
        tmp_path,
        scene_tree,
        paired_tree,
        "hydra/launcher=submitit_local",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.val_limit=null",
        "model.loss.fidelity=100",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((folder / "0" / "val_metrics.json").read_text())
    assert isinstance(metrics["val/psnr"], float)
    assert "using ddp_spawn for its ranks" in (folder / "0" / "train.log").read_text()


class ExitAt(L.Callback):
    """What submitit does on a time-out: requeue, then SystemExit on rank 0 wherever training is."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise SystemExit(-1)


# 5. a SLURM time-out saves last.ckpt at the current step; the requeued job continues from it
def test_a_time_out_saves_the_current_step_and_the_requeued_job_continues(tiny_cfg, monkeypatch, capsys):
    cfg = tiny_cfg(
        "logger=none",
        "trainer.max_epochs=5",
        "+callbacks.exit_at._target_=test_cluster_jobs.ExitAt",
        "+callbacks.exit_at.step=4",
    )
    last = os.path.join(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    with pytest.raises(SystemExit):
        run_train(cfg)
    assert checkpoint_step(last) == 4  # mid-epoch (3 scenes an epoch): not the end of the previous epoch
    assert "interrupted by a job time-out or pre-emption (SystemExit) at step 4" in capsys.readouterr().out
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_train(tiny_cfg("logger=none", "trainer.max_epochs=5", "trainer.max_steps=6"))
    assert checkpoint_step(last) == 6


# 6. one run folder per job, .hydra/ from rank 0
@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SLURM_JOB_ID": "4242"}, "slurm-4242"),
        ({"SLURM_JOB_ID": "7", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "3"}, "slurm-5_3"),
        ({"TORCHELASTIC_RUN_ID": "abc"}, "torchrun-abc"),
    ],
)
def test_every_rank_of_a_job_resolves_one_run_folder(monkeypatch, env, name):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    folders = set()
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        cfg = composed()
        folders.add(cfg.hydra.run.dir)
        assert cfg.hydra.output_subdir == (".hydra" if rank == "0" else None)
    (folder,) = folders
    assert folder.endswith(f"/train/runs/{name}")


# 7. deterministic=true on a GPU
def test_deterministic_true_on_a_gpu_is_refused_before_training(tiny_cfg, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = tiny_cfg("trainer.accelerator=gpu", "trainer.deterministic=true")
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(run_train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trainer.deterministic=true:") and "trainer.deterministic=warn" in err
    assert not os.path.exists(os.path.join(cfg.paths.output_dir, "checkpoints"))


# 17. a requeued job resumes in its folder with the run's own schedule; a resume with nothing to do says so
@RunIf(clis=("pairlie-train",))
@pytest.mark.parametrize("where", ["epoch_end", "mid_epoch"])
def test_a_requeued_slurm_job_continues_its_run_with_its_own_schedule(
    tmp_path, scene_tree, paired_tree, where, monkeypatch
):
    extra = ["+callbacks.last_checkpoint.every_n_train_steps=7"] if where == "mid_epoch" else []
    args = [*train_args(scene_tree, paired_tree, None), *extra]  # the job's own folder, as a cluster job runs it
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    run = tmp_path / "logs" / "train" / "runs" / "slurm-4242"
    proc = start("pairlie-train", *args, "trainer.max_epochs=1000", cwd=tmp_path, env={"SLURM_JOB_ID": "4242"})
    last = run / "checkpoints" / "last.ckpt"
    wait_for(last, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = checkpoint_step(last)
    more = 2
    if where == "mid_epoch":
        assert killed_at % 60 != 0  # 3 scenes x 20 repeats an epoch
        more = 7  # last.ckpt is written every 7 steps here
    # the job script runs the same command again, without the run's own trainer.max_epochs=1000
    requeued = {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "1"}
    again = run_cli("pairlie-train", *args, f"trainer.max_steps={killed_at + more}", cwd=tmp_path, env=requeued)
    assert again.returncode == 0, again.stderr[-2000:]
    log = (run / "train.log").read_text()
    assert "auto_resume: continuing from" in log and "'trainer.max_epochs': 1000" in log
    assert checkpoint_step(last) == killed_at + more, again.stdout[-3000:] + again.stderr[-3000:]


@RunIf(clis=("pairlie-train",))
def test_resuming_a_finished_run_is_one_line_and_not_a_silent_success(tmp_path, scene_tree, paired_tree):
    run = tmp_path / "run"
    args = train_args(scene_tree, paired_tree, run, "trainer.max_epochs=1", "data.repeats=1")
    first = run_cli("pairlie-train", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # last.ckpt holds epoch 0 finished: Lightning would start, train nothing and exit 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    again = run_cli("pairlie-train", *args, "ckpt_path=last", cwd=tmp_path)
    assert again.returncode == 2 and "finished 1 epoch(s)" in again.stderr and "nothing to train" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize(("limit", "fails"), [(0.1, True), (0.5, False), (1, False)])
def test_a_validation_fraction_that_leaves_a_rank_without_images_is_one_line(tiny_cfg, capsys, limit, fails):
    cfg = tiny_cfg("logger=none", f"trainer.limit_val_batches={limit}", "trainer.max_steps=1")
    if not fails:
        run_train(cfg)
        return
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_errors(run_train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trainer.limit_val_batches=0.1: leaves a process with no validation image (2 images")
