"""``pairlie-test``: paper-protocol PSNR/SSIM of a checkpoint on low/high pairs (configs/test.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from pairlie.cli.common import CONFIG_PATH, apply_speed_settings, log, run_cli, run_reporting_errors
from pairlie.cli.preflight import CliSpec
from pairlie.errors import ConfigError
from pairlie.evaluation import evaluate, make_lpips, write_results
from pairlie.inference import Enhancer
from pairlie.runs import resolve_checkpoint


def test(cfg: DictConfig) -> dict:
    """Score the checkpoint on the test pairs; writes metrics.json, per_image.csv and images."""
    out_dir = Path(cfg.paths.output_dir)
    if (out_dir / "metrics.json").exists() and not cfg.overwrite:
        raise ConfigError(
            f"hydra.run.dir={out_dir}: holds the results of an earlier test run; choose another folder or pass overwrite=true"
        )
    checkpoint = resolve_checkpoint(cfg)
    apply_speed_settings(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    gamma = cfg.model.gamma if cfg.model.gamma is not None else cfg.data.get("gamma")
    enhancer = Enhancer.from_checkpoint(checkpoint, gamma=gamma, device=cfg.device, half=cfg.half, tile=cfg.tile)
    lpips, reason = make_lpips(str(enhancer.device)) if cfg.lpips else (None, "disabled (lpips=false)")
    if reason:
        print(f"LPIPS skipped: {reason}")
    pairs = datamodule.test_set.pairs
    result = evaluate(
        enhancer,
        pairs,
        out_dir,
        save_images=cfg.save_images,
        save_decomposition=cfg.save_decomposition,
        jpeg_quality=cfg.jpeg_quality,
        score_saved=cfg.score_saved,
        lpips=lpips,
    )
    meta = {
        "gamma": enhancer.gamma,
        "checkpoint": str(checkpoint.resolve()),
        "test_dir": str(pairs[0][0].parent.parent.resolve()),
        "scored": "saved files" if cfg.score_saved else "in-memory images",
        "jpeg_quality": cfg.jpeg_quality,
        "lpips_skipped": reason,
    }
    metrics = write_results(result, out_dir, meta)
    table = Table(title=f"pairlie-test: {metrics['count']} images, gamma {enhancer.gamma:g}")
    for column in ("", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="right")
    table.add_row("input", f"{metrics['input_psnr']:.3f}", f"{metrics['input_ssim']:.4f}")
    table.add_row("enhanced", f"{metrics['psnr']:.3f}", f"{metrics['ssim']:.4f}")
    Console().print(table)
    log.info("results in %s", out_dir)
    print(f"results: {out_dir / 'metrics.json'}")
    return metrics


SPEC = CliSpec(
    name="pairlie-test",
    config_name="test",
    summary="score a checkpoint on low/high pairs under the paper's protocol (PSNR, SSIM), writing metrics.json.",
    usage="pairlie-test [ckpt_path=FILE] [data=lol|sice | data.test_dir=DIR] [model.gamma=G] [key=value ...]",
    examples=[
        "pairlie-test                                    # the latest pairlie-train run, on its demo pairs",
        "pairlie-test ckpt_path=PairLIE.pth data=lol paths.data_dir=/data",
        "pairlie-test -m ckpt_path=X.ckpt model.gamma=0.1,0.14,0.2",
    ],
    groups=["data"],
    key_files=[("test.yaml", ""), ("data/default.yaml", "data.")],
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="test")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app; returns the PSNR for Hydra sweepers."""
    return run_reporting_errors(test, cfg)["psnr"]


def main() -> None:
    """Entry point of ``pairlie-test``."""
    run_cli(SPEC, hydra_main)


if __name__ == "__main__":
    main()
