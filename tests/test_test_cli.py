"""pairlie-test: results files, defaults after pairlie-train, multirun, and the paper's LOL numbers."""

import csv
import json

import numpy as np
import pytest

from helpers import (
    OFFICIAL_WEIGHTS,
    SHARED_DATA,
    TINY,
    RunIf,
    make_paired_tree,
    make_scene_tree,
    run_cli,
    undocumented,
)
from pairlie.evaluate.metrics import psnr, ssim
from pairlie.infer.enhancer import Enhancer
from pairlie.io.images import load_image, quantize, read_rgb

pytestmark = RunIf(clis=("pairlie-test",))


def test_results_files_and_decomposition(tmp_path, tiny_ckpt):
    data = make_paired_tree(tmp_path / "pairs", names=("x.png", "y.jpg"))
    out = tmp_path / "out"
    result = run_cli(
        "pairlie-test",
        f"ckpt_path={tiny_ckpt}",
        f"data.test_dir={data}",
        "model.gamma=0.3",
        "save_decomposition=true",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 2 and metrics["gamma"] == 0.3
    assert metrics["checkpoint"] == str(tiny_ckpt.resolve())
    assert metrics["precision"] == "fp32"  # the paper's protocol, whatever the CPU
    for key in ("psnr", "ssim", "input_psnr", "input_ssim"):
        assert isinstance(metrics[key], float)
    assert "valid region" in metrics["protocol"]["ssim"] and "truncation" in metrics["protocol"]["quantisation"]
    rows = {r["name"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    assert list(rows) == ["x.png", "y.jpg"]
    # docs/outputs.md says what every key and column is
    assert not undocumented([*metrics, *metrics["protocol"], *metrics["gamma_table"][0], *rows["x.png"]])
    for sub in ("enhanced", "L", "R", "X", "D"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["x.png", "y.jpg"], sub
    # the saved images are the checkpoint's decomposition at γ 0.3 (within a grey level: threads may sum differently)
    out_here = Enhancer.from_checkpoint(tiny_ckpt, gamma=0.3, device="cpu").decompose(
        load_image(data / "low" / "x.png")
    )
    for sub, image in (("enhanced", out_here.enhanced[0]), ("L", out_here.illumination[0].expand(3, -1, -1))):
        saved = read_rgb(out / sub / "x.png")[0].astype(int)
        assert np.abs(saved - quantize(image).astype(int)).max() <= 1, sub
    # the scores are those of the PNG written (the in-memory image it holds, exactly), against the reference
    enhanced, high = read_rgb(out / "enhanced" / "x.png")[0], read_rgb(data / "high" / "x.png")[0]
    assert float(rows["x.png"]["psnr"]) == pytest.approx(psnr(enhanced, high), abs=1e-4)
    assert float(rows["x.png"]["ssim"]) == pytest.approx(ssim(enhanced, high), abs=1e-6)
    low = read_rgb(data / "low" / "x.png")[0]
    assert float(rows["x.png"]["input_psnr"]) == pytest.approx(psnr(low, high), abs=1e-4)
    assert metrics["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows.values()]), abs=1e-4)
    # the printed table: a row per kind with the numbers of metrics.json
    lines = result.stdout.splitlines()
    (input_row,) = [line for line in lines if "input" in line and "PSNR" not in line and "images of" not in line]
    (enhanced_row,) = [line for line in lines if "enhanced" in line]
    assert f"{metrics['input_psnr']:.3f}" in input_row and f"{metrics['input_ssim']:.4f}" in input_row
    assert f"{metrics['psnr']:.3f}" in enhanced_row and f"{metrics['ssim']:.4f}" in enhanced_row
    assert f"pairlie-test: 2 images of {data.resolve()}, gamma 0.3" in result.stdout


def test_defaults_after_pairlie_train_use_its_checkpoint_and_the_demo(tmp_path):
    env = {"PAIRLIE_LOG_DIR": str(tmp_path / "logs"), "PAIRLIE_DEMO_DIR": str(tmp_path / "demo")}
    make_scene_tree(tmp_path / "demo" / "train", size=(64, 64))
    make_paired_tree(tmp_path / "demo" / "val", names=("v.png",), size=(64, 64))
    (tmp_path / "demo" / "COMPLETE").write_text("stand-in demo set\n")
    trained = run_cli("pairlie-train", *TINY, cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = run_cli("pairlie-test", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no ckpt_path given: using" in result.stdout and "logs/train/runs" in result.stdout
    (metrics_file,) = (tmp_path / "logs" / "test" / "runs").glob("*/metrics.json")
    assert json.loads(metrics_file.read_text())["count"] == 1


def test_no_checkpoint_anywhere_is_one_line(tmp_path):
    result = run_cli("pairlie-test", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2 and "error: no ckpt_path given and no pairlie-train checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_precision_is_recorded_and_a_bad_one_is_one_line(tmp_path, tiny_ckpt):
    data = make_paired_tree(tmp_path / "pairs", names=("x.png",))
    common = (f"ckpt_path={tiny_ckpt}", f"data.test_dir={data}", "noref=false", "lpips=false")
    result = run_cli("pairlie-test", *common, "precision=bf16", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["conv"] == "direct"  # Winograd is fp32 only
    bad = run_cli("pairlie-test", *common, "precision=int4", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode == 2 and "error: precision='int4': must be one of auto, fp32, bf16" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_gamma_multirun_writes_one_folder_each(tmp_path, tiny_ckpt):
    data = make_paired_tree(tmp_path / "pairs", names=("x.png",))
    result = run_cli(
        "pairlie-test", "-m", "model.gamma=0.1,0.2", f"ckpt_path={tiny_ckpt}", f"data.test_dir={data}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "logs" / "test" / "multiruns").iterdir()  # as typed: no hydra.sweep.dir
    gammas = [json.loads((sweep / str(i) / "metrics.json").read_text())["gamma"] for i in (0, 1)]
    assert gammas == [0.1, 0.2]


@RunIf(shared=True)
def test_lol_acceptance_with_the_official_weights(tmp_path):
    """The paper's LOL protocol on all 15 pairs: the authors' released outputs score 19.514 / 0.7358."""
    result = run_cli(
        "pairlie-test",
        f"ckpt_path={OFFICIAL_WEIGHTS}",
        "data=lol",
        f"paths.data_dir={SHARED_DATA}",
        "save_images=false",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["count"] == 15 and metrics["gamma"] == 0.14
    assert metrics["psnr"] == pytest.approx(19.514, abs=0.01)
    assert metrics["ssim"] == pytest.approx(0.7359, abs=0.001)
    assert metrics["input_psnr"] < 10
