"""``pairlie-test``: paper-protocol PSNR/SSIM, NIQE and LOE of a checkpoint on a test set (configs/test.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pairlie.cli.common import CONFIG_PATH, apply_speed_settings, run_cli, run_reporting_errors
from pairlie.configuration import CliSpec
from pairlie.evaluate.report import THUMB_DIR, print_summary, write_report
from pairlie.evaluate.scoring import evaluate, gammas_to_score, make_lpips, write_results
from pairlie.infer.enhancer import Enhancer
from pairlie.io.files import removed_on_write_error
from pairlie.io.images import check_jpeg_quality, check_max_pixels
from pairlie.train.runs import check_classes, check_no_earlier_test, resolve_checkpoint


def check_data(cfg: DictConfig) -> None:
    """``data._target_`` names a LightningDataModule: one line before a run folder exists."""
    check_classes(OmegaConf.create({"data": OmegaConf.to_container(cfg.data, resolve=False)}))


def test(cfg: DictConfig) -> dict:
    """Score the checkpoint on the test set; writes metrics.json, per_image.csv, report.html and images."""
    out_dir = Path(cfg.paths.output_dir)
    check_no_earlier_test(out_dir, cfg.overwrite)
    check_jpeg_quality(cfg.jpeg_quality)
    check_max_pixels(cfg.max_pixels)
    checkpoint = resolve_checkpoint(cfg)
    apply_speed_settings(cfg)
    datamodule = instantiate(cfg.data, max_pixels=cfg.max_pixels)
    datamodule.prepare_data()
    datamodule.setup("test")
    gammas = gammas_to_score(cfg.model.gamma, cfg.data.get("gamma"), score_saved=cfg.score_saved)
    gamma = gammas[0] if gammas else None
    enhancer = Enhancer.from_checkpoint(
        checkpoint,
        gamma=gamma,
        trust=cfg.trust,
        device=cfg.device,
        half=cfg.half,
        tile=cfg.tile,
        conv=cfg.conv,
        precision=cfg.precision,
        calibration=cfg.calibration,
    )
    lpips, reason = make_lpips(str(enhancer.device)) if cfg.lpips else (None, "disabled (lpips=false)")
    if reason and cfg.lpips is True:  # asked for by name: say why not; under auto, metrics.json records it
        print(f"LPIPS skipped: {reason}")
    pairs = datamodule.test_set.pairs
    with removed_on_write_error(out_dir, "hydra.run.dir"):  # a full disk mid-run leaves no half-written results
        result = evaluate(
            enhancer,
            pairs,
            out_dir,
            save_images=cfg.save_images,
            save_decomposition=cfg.save_decomposition,
            jpeg_quality=cfg.jpeg_quality,
            score_saved=cfg.score_saved,
            lpips=lpips,
            gammas=gammas,
            no_reference=cfg.noref,
            thumbnails=out_dir / THUMB_DIR,
            max_pixels=cfg.max_pixels,
        )
        paired = result.paired
        meta = {
            "checkpoint": str(checkpoint.resolve()),
            "test_dir": str((pairs[0][0].parent.parent if paired else pairs[0][0].parent).resolve()),
            "scored": "saved files" if cfg.score_saved else "in-memory images",
            "jpeg_quality": cfg.jpeg_quality,
            "lpips_skipped": reason,
            "conv": enhancer.conv,  # winograd or direct: equal to float rounding, the scores to 0.001 dB (docs/enhancing.md)
            "precision": enhancer.precision,  # fp32: the paper's protocol; bf16 scores within 0.01 dB (tested)
        }
        if enhancer.int8 is not None:
            meta["calibration"] = {"source": str(cfg.calibration), "images": enhancer.int8.calibrated}
        metrics = write_results(result, out_dir, meta)
        report = write_report(result, metrics, out_dir)
    print_summary(metrics)
    print(f"results: {out_dir / 'metrics.json'}")
    print(f"report: {report}")
    return metrics


SPEC = CliSpec(
    name="pairlie-test",
    config_name="test",
    summary="score a checkpoint on low/high pairs (PSNR, SSIM as in the paper) or on a folder of images "
    "(NIQE, LOE), writing metrics.json and report.html.",
    usage="pairlie-test [ckpt_path=FILE] [data=lol|sice | data.test_dir=DIR] [model.gamma=G|[G,...]] [key=value ...]",
    examples=[
        "pairlie-test                                    # the latest pairlie-train run, on its demo pairs",
        "pairlie-test ckpt_path=official data=lol paths.data_dir=/data",
        "pairlie-test ckpt_path=official data.test_dir=photos/   # no low/+high/: NIQE and LOE only",
        "pairlie-test ckpt_path=X.ckpt model.gamma=[0.1,0.14,0.2,0.3]  # every γ from one decomposition",
    ],
    groups=["data"],
    check_parts=check_data,
    key_files=[("test.yaml", ""), ("data/default.yaml", "data.", {"data.test_dir", "data.pairing", "data.test_limit"})],
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="test")
def hydra_main(cfg: DictConfig) -> float | None:
    """The Hydra app; returns the PSNR for Hydra sweepers (None for a set without references)."""
    return run_reporting_errors(test, cfg)["psnr"]


def main() -> None:
    """Entry point of ``pairlie-test``."""
    run_cli(SPEC, hydra_main)


if __name__ == "__main__":
    main()
