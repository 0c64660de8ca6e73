"""pairlie.train.sweep in this process: a multirun's folders ranked, best first, with what each job varied."""

import json
import sys

import pytest
from omegaconf import OmegaConf

from pairlie.train import sweep
from pairlie.train.sweep import RESULT_FILE, SweepSummary, collect, format_table


def job(folder, name, overrides, metrics=None):
    """A job folder as Hydra and pairlie-train leave it: .hydra/overrides.yaml, and val_metrics.json once it ends."""
    (folder / name / ".hydra").mkdir(parents=True)
    (folder / name / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        (folder / name / RESULT_FILE).write_text(json.dumps(metrics))


@pytest.fixture
def multirun(tmp_path):
    common = "trainer.max_epochs=2"
    job(tmp_path, "0", ["model.loss.fidelity=100", common], {"val/psnr": 20.5, "val/ssim": 0.61})
    job(tmp_path, "1", ["model.loss.fidelity=500", common], {"val/psnr": 22.25, "val/ssim": 0.7})
    job(tmp_path, "2", ["model.loss.fidelity=1000", common], {"val/psnr": None, "val/ssim": None})  # diverged
    job(tmp_path, "3", ["model.loss.fidelity=5000", common])  # still running: no results yet
    return tmp_path


def test_jobs_are_ranked_best_first_with_only_what_the_sweep_varied(multirun):
    rows = collect(multirun)
    assert [(r["job"], r["swept"], r["val/psnr"]) for r in rows] == [
        ("1", "model.loss.fidelity=500", 22.25),
        ("0", "model.loss.fidelity=100", 20.5),
        ("2", "model.loss.fidelity=1000", None),
    ]
    assert rows[0]["overrides"] == ["model.loss.fidelity=500", "trainer.max_epochs=2"]


def test_the_table_shows_each_job_s_scores_and_overrides(multirun):
    lines = format_table(collect(multirun)).splitlines()
    assert lines[0].split() == ["job", "val", "PSNR", "val", "SSIM", "swept", "overrides"]
    assert lines[1].split() == ["1", "22.250", "0.7000", "model.loss.fidelity=500"]
    assert lines[3].split() == ["2", "None", "None", "model.loss.fidelity=1000"]


def test_the_hydra_callback_writes_summary_json_at_the_end_of_the_multirun(multirun, capsys):
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(multirun)}}}))
    summary = json.loads((multirun / "summary.json").read_text())
    assert summary == json.loads(json.dumps(collect(multirun)))
    assert f"sweep summary ({multirun / 'summary.json'}), best first:" in capsys.readouterr().out


def test_a_multirun_without_results_writes_nothing(tmp_path, capsys):
    job(tmp_path, "0", ["model.loss.fidelity=100"])
    assert collect(tmp_path) == []
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert not (tmp_path / "summary.json").exists() and capsys.readouterr().out == ""


def test_python_m_pairlie_sweep_prints_the_ranking(multirun, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sweep", str(multirun)])
    sweep.main()
    assert capsys.readouterr().out == format_table(collect(multirun)) + "\n"
    monkeypatch.setattr(sys, "argv", ["sweep"])
    with pytest.raises(SystemExit, match="usage: python -m pairlie.train.sweep SWEEP_DIR"):
        sweep.main()
