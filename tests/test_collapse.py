"""A collapsed model (flat grey outputs) is named at validation, in the log and in the end-of-run block."""

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cpu_trainer, make_paired_tree
from pairlie.data import PairLIEDataModule
from pairlie.evaluate.collapse import FLAT_METRIC, flat_note, is_flat
from pairlie.train.module import PairLIEModule
from pairlie.train.runs import summary_lines
from pairlie.train.sweep import format_table


def test_an_image_is_flat_only_when_every_channel_varies_by_less_than_a_grey_level():
    rng = np.random.default_rng(0)
    grey = np.full((3, 40, 48), 0.42) + rng.normal(0, 0.3 / 255, (3, 40, 48))
    assert is_flat(grey) and is_flat(torch.from_numpy(grey))
    textured = grey.copy()
    textured[2] += rng.normal(0, 3 / 255, (40, 48))  # one channel with texture is enough
    assert not is_flat(textured)
    assert not is_flat(rng.random((3, 40, 48)))


def test_the_end_of_run_block_names_a_collapsed_model_and_not_a_working_one(tmp_path):
    metrics = {"val/psnr": 13.83, "val/ssim": 0.4, "val/input_psnr": 8.9, "val/input_ssim": 0.28}
    collapsed = "\n".join(summary_lines({**metrics, FLAT_METRIC: 1.0}, tmp_path, 2, None))
    assert "warning: outputs are constant: 100% of the validation images came out flat" in collapsed
    assert "typical before a few hundred steps" in collapsed
    working = "\n".join(summary_lines({**metrics, FLAT_METRIC: 0.0}, tmp_path, 2, None))
    assert "outputs are constant" not in working and flat_note({**metrics, FLAT_METRIC: 0.4}) is None


def test_a_sweep_summary_marks_jobs_whose_outputs_are_flat():
    rows = [
        {"job": "0", "val/psnr": 13.83, "val/ssim": 0.4, FLAT_METRIC: 1.0, "swept": "model.loss.fidelity=100"},
        {"job": "1", "val/psnr": 12.5, "val/ssim": 0.3, FLAT_METRIC: 0.0, "swept": "model.loss.fidelity=500"},
    ]
    lines = format_table(rows).splitlines()
    assert lines[1].endswith("model.loss.fidelity=100  (outputs constant)")
    assert lines[2].endswith("model.loss.fidelity=500")


@pytest.mark.parametrize("weights", ["zero", "trained"])
def test_validation_logs_the_fraction_of_flat_outputs(weights, tmp_path: Path, caplog):
    """A net whose weights are all zero gives one grey value everywhere; the identity-like one keeps the texture."""
    from pairlie.train.callbacks import FlatOutputWarning

    torch.manual_seed(0)
    module = PairLIEModule(width=4)
    with torch.no_grad():
        for p in module.net.parameters():
            if weights == "zero":
                p.zero_()
            else:
                p.mul_(4)  # sharpened random weights keep the input's texture (tests/helpers.py)
    data = PairLIEDataModule(val_dir=str(make_paired_tree(tmp_path / "val", size=(64, 48))))
    data.setup("validate")
    trainer = cpu_trainer(1, callbacks=[FlatOutputWarning()])
    with caplog.at_level("WARNING", logger="pairlie"):
        trainer.validate(module, datamodule=data, verbose=False)
    flat = float(trainer.callback_metrics[FLAT_METRIC])
    assert flat == (1.0 if weights == "zero" else 0.0)
    assert ("outputs are constant" in caplog.text) == (weights == "zero")
