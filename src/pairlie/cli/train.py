"""``pairlie-train``: fit PairLIE on exposure pairs (Hydra app; see configs/train.yaml)."""

from __future__ import annotations

import sys
import warnings

import hydra
from omegaconf import DictConfig

from pairlie.cli.common import CONFIG_PATH, run_cli, run_reporting_errors
from pairlie.configuration import CliSpec
from pairlie.train.fit import check_parts, train
from pairlie.train.runs import own_data

SPEC = CliSpec(
    name="pairlie-train",
    config_name="train",
    summary="train PairLIE on pairs of differently exposed low-light shots (Lightning + Hydra).",
    usage="pairlie-train [-m] [experiment=sice|lol|demo] [data.train_dir=DIR data.val_dir=DIR] [key=value ...]",
    examples=[
        "pairlie-train                                   # the embedded demo set, ~minutes on a CPU",
        "pairlie-train experiment=sice paths.data_dir=/data trainer=gpu",
        "pairlie-train -m model.loss.fidelity=100,500,1000   # a sweep, one run folder per value",
    ],
    groups=[
        "experiment",
        "data",
        "model",
        "model/net",
        "model/optimizer",
        "model/scheduler",
        "trainer",
        "logger",
        "callbacks",
        "hparams_search",
        "debug",
    ],
    key_files=[
        ("train.yaml", ""),
        ("model/pairlie.yaml", "model."),
        ("model/net/pairlie.yaml", "model.net."),
        ("model/optimizer/adam.yaml", "model.optimizer."),
        ("model/scheduler/step.yaml", "model.scheduler."),
        ("data/default.yaml", "data."),
        ("trainer/default.yaml", "trainer.", {"trainer.max_epochs", "trainer.max_steps", "trainer.precision"}),
    ],
    extra_keys=[
        "trainer.*                          any Lightning Trainer argument: max_epochs, devices, precision, ...",
        "--config-dir DIR                   your own config groups (model/net/NAME.yaml, experiment/NAME.yaml, ...)",
    ],
    check_parts=check_parts,
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app; returns the validation PSNR for Hydra sweepers."""
    # Lightning 2.6 tests isinstance(..., LeafSpec), which torch 2.10+ deprecates: nothing a user can act on.
    # Set for this process, the command's own; train() itself leaves a caller's (a test's) warning filters alone.
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    metrics = run_reporting_errors(train, cfg)
    return metrics.get("val/psnr")


def main() -> None:
    """Entry point of ``pairlie-train``."""
    # your own data.train_dir without a data preset: data=default (the published schedule), not the demo's
    sys.argv[1:] = own_data(sys.argv[1:])
    run_cli(SPEC, hydra_main)


if __name__ == "__main__":
    main()
