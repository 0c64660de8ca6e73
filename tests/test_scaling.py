"""Cluster and sweep plumbing: submitit launcher, SLURM preset, Optuna search, auto-resume."""

import json

import pytest
import yaml

from helpers import TINY, RunIf, composed, run_cli, sweep


@RunIf(clis=("pairlie-train",), sweep=("submitit",))
def test_submitit_local_launcher_runs_one_job_per_point(tmp_path, scene_tree, paired_tree):
    result, folder = sweep(
        tmp_path, scene_tree, paired_tree, "hydra/launcher=submitit_local", "model.loss.fidelity=100,500"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert sorted(r["swept"] for r in summary) == ["model.loss.fidelity=100", "model.loss.fidelity=500"]
    assert all(isinstance(r["val/psnr"], float) for r in summary)


@RunIf(clis=("pairlie-train",), sweep=("optuna",))
def test_optuna_search_over_loss_weights_writes_the_best_parameters(tmp_path, scene_tree, paired_tree):
    result, folder = sweep(tmp_path, scene_tree, paired_tree, "hparams_search=loss_weights", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "model.loss.consistency",
        "model.loss.retinex",
        "model.loss.fidelity",
        "model.gamma",
    }
    assert 50 <= best["best_params"]["model.loss.fidelity"] <= 5000
    runs = [json.loads((folder / j / "val_metrics.json").read_text())["val/psnr"] for j in ("0", "1")]
    assert best["best_value"] == pytest.approx(max(runs))


@RunIf(sweep=("submitit",))
def test_slurm_preset_takes_its_resources_from_the_environment(monkeypatch):
    monkeypatch.setenv("PAIRLIE_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("PAIRLIE_SLURM_GPUS_PER_NODE", "4")
    monkeypatch.setenv("PAIRLIE_SLURM_ACCOUNT", "lab")
    cfg = composed("hydra/launcher=slurm", "trainer=ddp")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.gpus_per_node, launcher.tasks_per_node) == (
        "gpu",
        "lab",
        4,
        4,
    )
    assert launcher.nodes == 1 and launcher.max_num_timeout > 0
    assert cfg.trainer.strategy == "ddp"


@RunIf(clis=("pairlie-train",))
def test_ddp_spawn_inside_a_local_multirun_runs_each_point_once(tmp_path, scene_tree, paired_tree):
    result, folder = sweep(
        tmp_path,
        scene_tree,
        paired_tree,
        "model.loss.fidelity=100,500",
        "trainer.devices=2",
        "trainer.strategy=ddp_spawn",
        "trainer.accelerator=cpu",
        "data.val_limit=null",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["0", "1"]
    assert (result.stdout + result.stderr).count("Launching 2 jobs locally") == 1  # the sweep was not re-launched
    assert result.stdout.count("validation (") == 2


@RunIf(clis=("pairlie-train",))
def test_fewer_validation_images_than_processes_is_one_line(tmp_path, scene_tree, paired_tree):
    result = run_cli(
        "pairlie-train",
        *TINY,
        f"data.train_dir={scene_tree}",
        f"data.val_dir={paired_tree}",
        "trainer.devices=2",
        "trainer.strategy=ddp_spawn",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "1 validation image(s) for 2 processes" in result.stderr
    assert "Traceback" not in result.stderr
