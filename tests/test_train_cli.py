"""pairlie-train: every config composes, trains on CPU, resumes, reports bad input in one line."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from helpers import REPO, SHARED_DATA, TINY, RunIf, composed, make_paired_tree, run_cli, run_train, undocumented
from pairlie.infer.precision import FLAGS_VARIABLE
from pairlie.model.checkpoints import load_net


@pytest.mark.parametrize(
    ("overrides", "gamma", "epochs"),
    [([], 0.2, 4), (["experiment=sice"], 0.2, 400), (["experiment=lol"], 0.14, 400), (["debug=fdr"], 0.2, 4)],
)
def test_every_experiment_composes(overrides, gamma, epochs):
    cfg = composed(*overrides, hydra=False)
    assert cfg.model.gamma == gamma and cfg.trainer.max_epochs == epochs
    assert cfg.model.optimizer.lr == 1e-4 and list(cfg.model.optimizer.betas) == [0.9, 0.999]
    assert dict(cfg.model.loss) == {"consistency": 1.0, "retinex": 1.0, "fidelity": 500.0}
    assert cfg.model.scheduler.gamma == 0.5


def test_sice_experiment_is_the_published_schedule():
    cfg = composed("experiment=sice", hydra=False)
    assert (cfg.data.batch_size, cfg.data.patch_size, cfg.data.augment) == (1, 128, False)
    assert cfg.model.scheduler.step_size == 100 and cfg.model.width == 64


def test_fast_dev_run_trains_on_cpu(tiny_cfg):
    metrics = run_train(tiny_cfg("debug=fdr", "logger=none"))
    assert set(metrics) >= {"val/psnr", "val/ssim", "val/input_psnr", "val/input_ssim"}


@pytest.mark.parametrize(("flags", "warned"), [("avx2", True), ("avx2 avx512_bf16 amx_bf16", False)])
def test_bf16_mixed_on_a_cpu_warns_only_where_bf16_is_emulated(tiny_cfg, monkeypatch, caplog, flags, warned):
    monkeypatch.setenv(FLAGS_VARIABLE, flags)
    metrics = run_train(tiny_cfg("debug=fdr", "logger=none", "trainer.precision=bf16-mixed"))
    assert "val/psnr" in metrics  # validation in fp32 (model.val_precision) under the bf16 autocast
    assert ("~50x slower than 32-true" in caplog.text) is warned


def test_training_writes_checkpoints_logs_and_config(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    run_train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("epoch000-psnr*.ckpt"))) == 1
    (events,) = (run / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events)).Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/consistency", "train/retinex", "train/fidelity", "lr-Adam"} <= scalars
    assert {"val/psnr", "val/ssim", "val/input_psnr", "val/input_ssim"} <= scalars
    assert {"hp/val_psnr", "hp/val_ssim", "train/samples", "train/time"} <= scalars  # throughput monitor
    hparams = accumulator.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    # the run's keys that differ from a bare pairlie-train's, once each (the exact set: tests/test_contracts.py)
    assert session.hparams["model.width"].number_value == 4 and session.hparams["data.patch_size"].number_value == 32
    assert not {"gamma", "width", "model.loss.fidelity"} & set(session.hparams)
    experiment = HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"hp/val_psnr", "hp/val_ssim"}
    assert accumulator.Tags()["images"] == ["val_images/a.png (input|L|R|X|I)", "val_images/b.png (input|L|R|X|I)"]
    assert "fidelity: 500.0" in (run / "config.yaml").read_text()
    net, hparams = load_net(run / "checkpoints" / "last.ckpt")
    assert net.width == 4 and hparams["gamma"] == 0.2


def test_last_checkpoint_follows_every_epoch_even_without_a_new_best(tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=3", "model.optimizer.lr=1e-12", "logger=none")  # val PSNR cannot improve
    run_train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    assert [p.name for p in ckpts.glob("epoch*.ckpt")] == [next(ckpts.glob("epoch*.ckpt")).name]
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 9


def test_scale_lr_multiplies_by_the_global_batch(tiny_cfg):
    cfg = tiny_cfg("scale_lr=true", "data.batch_size=3", "logger=none", "trainer.max_steps=1")
    run_train(cfg)
    saved = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(3e-4)
    assert saved["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(3e-4)


def test_resume_continues_from_the_saved_global_step(tiny_cfg, tmp_path):
    first = tiny_cfg("logger=csv")
    run_train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    second = tiny_cfg(
        "logger=csv", "trainer.max_epochs=2", f"ckpt_path={last}", f"paths.output_dir={tmp_path / 'resumed'}"
    )
    run_train(second)
    with open(tmp_path / "resumed" / "csv" / "metrics.csv") as fh:
        steps = sorted({int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")})
    assert steps == [3, 4, 5]  # only the second epoch ran
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 6 and resumed["epoch"] == 1


def _cli(args, cwd):
    return run_cli("pairlie-train", *args, cwd=cwd)


def data_args(scene_tree, paired_tree) -> list[str]:
    """The synthetic training and validation folders."""
    return [f"data.train_dir={scene_tree}", f"data.val_dir={paired_tree}"]


@RunIf(clis=("pairlie-train",))
def test_console_script_trains_from_another_folder(tmp_path, scene_tree, paired_tree):
    result = _cli(
        [
            *TINY,
            *data_args(scene_tree, paired_tree),
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation (1 images): input" in result.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    # no warnings a user cannot act on: the FLOPs ThroughputMonitor needs, Lightning's use of torch
    assert "flops_per_batch" not in result.stderr and "LeafSpec" not in result.stderr


@RunIf(clis=("pairlie-train",))
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.gamma=abc", "error: model.gamma='abc': must be a number in (0, 10]"),
        ("model.loss.fidelity=-1", "error: model.loss.fidelity: must be a number >= 0"),
        ("data.patch_size=4096", "smaller than data.patch_size=4096"),
        ("data.train_dir=/nonexistent/scenes", "error: data.train_dir=/nonexistent/scenes: folder does not exist"),
    ],
)
def test_bad_input_is_one_line_before_training(tmp_path, scene_tree, paired_tree, override, message):
    result = _cli(
        [
            *TINY,
            *data_args(scene_tree, paired_tree),
            f"hydra.run.dir={tmp_path / 'run'}",
            override,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


@RunIf(clis=("pairlie-train",))
def test_loss_weight_grid_multirun_has_a_folder_per_run_and_a_summary(tmp_path, scene_tree, paired_tree):
    # as the README types it: no hydra.sweep.dir, so the sweep lands in ./logs/train/multiruns/<time>/
    result = _cli(["-m", "model.loss.fidelity=100,500", *TINY, *data_args(scene_tree, paired_tree)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((sweep / "summary.json").read_text())
    assert sorted(r["swept"] for r in summary) == ["model.loss.fidelity=100", "model.loss.fidelity=500"]
    assert summary[0]["val/psnr"] >= summary[1]["val/psnr"]
    assert "sweep summary" in result.stdout
    # docs/outputs.md says what summary.json, val_metrics.json and a checkpoint hold
    checkpoint = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", weights_only=True)
    val_metrics = json.loads((sweep / "0" / "val_metrics.json").read_text())
    assert not undocumented([*summary[0], *val_metrics, *checkpoint, *checkpoint["hyper_parameters"]])


@RunIf(clis=("pairlie-train",))
def test_misspelled_key_is_one_line_with_the_close_match(tmp_path):
    result = _cli(["model.gama=0.3", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "error: model.gama: no such key; did you mean model.gamma?" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_non_editable_install_finds_its_configs(tmp_path, scene_tree, paired_tree):
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0 and "setuptools" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "pairlie" / "configs" / "experiment" / "sice.yaml").is_file()
    code = (
        "import sys, pairlie; assert pairlie.__file__.startswith(sys.argv[1]), pairlie.__file__; "
        "sys.argv = sys.argv[1:]; from pairlie.cli.train import main; main()"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(target),
            *TINY,
            *data_args(scene_tree, paired_tree),
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@RunIf(shared=True)
@pytest.mark.slow
def test_sice_experiment_runs_on_the_real_scenes(tmp_path):
    result = _cli(
        [
            "experiment=sice",
            f"data.train_dir={SHARED_DATA / 'SICE-train'}",
            f"data.val_dir={SHARED_DATA / 'SICE-test'}",
            "data.val_limit=2",
            "model.width=8",
            "data.patch_size=32",
            "trainer.max_epochs=1",
            "trainer.max_steps=20",
            "trainer.accelerator=cpu",
            "logger=none",
            "callbacks.rich_progress_bar=null",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation (2 images)" in result.stdout


@RunIf(clis=("pairlie-train",))
def test_two_process_cpu_ddp_scores_every_image_once(tmp_path, scene_tree):
    """gloo DDP on 2 CPU processes: 3 validation images split 2 + 1, the mean equal to one process's."""
    val = make_paired_tree(tmp_path / "val3", names=("a.png", "b.png", "c.png"))
    results = {}
    for devices in (1, 2):
        run = tmp_path / f"run{devices}"
        result = _cli(
            [
                *TINY,
                "model.optimizer.lr=1e-12",
                f"data.train_dir={scene_tree}",
                f"data.val_dir={val}",
                "data.val_limit=null",
                f"trainer.devices={devices}",
                "trainer.strategy=ddp",
                f"hydra.run.dir={run}",
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("validation (3 images)") == 1  # printed by rank 0 only
        results[devices] = json.loads((run / "val_metrics.json").read_text())
    if_padded = "a DistributedSampler would have scored one image twice"
    assert results[2]["val/input_psnr"] == pytest.approx(results[1]["val/input_psnr"], abs=1e-5), if_padded
    assert results[2]["val/psnr"] == pytest.approx(results[1]["val/psnr"], abs=1e-4)
    assert (tmp_path / "run2" / "checkpoints" / "last.ckpt").is_file()
