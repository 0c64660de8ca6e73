"""``pairlie-export``: a checkpoint as one deployable ONNX (or TorchScript) file, verified (configs/export.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from pairlie.cli.common import CONFIG_PATH, run_cli, run_reporting_errors
from pairlie.configuration import CliSpec
from pairlie.deploy.export import MAX_GREY_LEVELS, Report, export
from pairlie.train.runs import resolve_checkpoint


def export_checkpoint(cfg: DictConfig) -> Report:
    """Export ``cfg.ckpt_path`` to ``cfg.output`` and print what was checked."""
    report = export(
        resolve_checkpoint(cfg),
        cfg.output,
        fmt=cfg.format,
        gamma=cfg.model.gamma,
        outputs=cfg.outputs,
        opset=cfg.opset,
        verify_on=cfg.verify,
        verify_images=OmegaConf.to_object(cfg.verify_images) or [],
        overwrite=cfg.overwrite,
        trust=cfg.trust,
    )
    for check in report.checks:
        size = "×".join(map(str, check.shape))
        print(
            f"checked {size} at gamma {check.gamma:g}: {check.grey_levels} grey level(s) ({check.float_diff:.2g} as float)"
        )
    worst = report.worst
    if worst is not None:
        print(f"verified: worst difference from pairlie {worst.grey_levels} grey level(s) (limit {MAX_GREY_LEVELS})")
    else:
        print(f"verification skipped: {report.skipped}")
    opset = f", opset {report.metadata['opset']}" if "opset" in report.metadata else ""
    print(f"wrote {report.path} ({report.fmt}{opset}, gamma {report.gamma:g}, {report.path.stat().st_size:,} bytes)")
    return report


SPEC = CliSpec(
    name="pairlie-export",
    config_name="export",
    summary="write a checkpoint as one self-contained ONNX file (any N, H, W; gamma an overridable initializer), verified in ONNX Runtime.",
    usage="pairlie-export output=FILE [ckpt_path=FILE] [model.gamma=G] [format=onnx|torchscript] [key=value ...]",
    examples=[
        "pairlie-export ckpt_path=official output=pairlie.onnx model.gamma=0.14",
        "pairlie-export ckpt_path=official output=pairlie_all.onnx outputs=all verify_images=[dark.png]",
        "pairlie-export output=pairlie.pt format=torchscript overwrite=true   # latest pairlie-train run",
    ],
    key_files=[("export.yaml", "")],
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def hydra_main(cfg: DictConfig) -> None:
    """The Hydra app."""
    run_reporting_errors(export_checkpoint, cfg)


def main() -> None:
    """Entry point of ``pairlie-export``."""
    run_cli(SPEC, hydra_main)


if __name__ == "__main__":
    main()
