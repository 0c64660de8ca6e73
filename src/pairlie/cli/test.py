"""``pairlie-test``: paper-protocol PSNR/SSIM, NIQE and LOE of a checkpoint on a test set (configs/test.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from pairlie.cli.common import CONFIG_PATH, apply_speed_settings, run_cli, run_reporting_errors
from pairlie.cli.preflight import CliSpec
from pairlie.errors import ConfigError
from pairlie.evaluation import evaluate, make_lpips, write_results
from pairlie.inference import Enhancer
from pairlie.report import THUMB_DIR, write_report
from pairlie.runs import resolve_checkpoint


def test_gammas(cfg: DictConfig) -> list[float] | None:
    """The γ to score: ``model.gamma`` (a number or a list), else the data preset's; None: the checkpoint's."""
    gamma = cfg.model.gamma if cfg.model.gamma is not None else cfg.data.get("gamma")
    if gamma is None:
        return None
    gammas = list(gamma) if isinstance(gamma, (ListConfig, list, tuple)) else [gamma]
    if not gammas:
        raise ConfigError("model.gamma=[]: give a number, or a list such as [0.1,0.14,0.2,0.3]")
    for g in gammas:
        if isinstance(g, bool) or not isinstance(g, (int, float)) or g <= 0:
            raise ConfigError(f"model.gamma={g!r}: every γ must be a number > 0 (0.2 for SICE, 0.14 for LOL)")
    if len(set(gammas)) != len(gammas):
        raise ConfigError(f"model.gamma={gammas}: lists a γ twice; list each once")
    return [float(g) for g in gammas]


def test(cfg: DictConfig) -> dict:
    """Score the checkpoint on the test set; writes metrics.json, per_image.csv, report.html and images."""
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
    gammas = test_gammas(cfg)
    if gammas and len(gammas) > 1 and cfg.score_saved:
        raise ConfigError("score_saved=true scores the written files, which hold one γ; give model.gamma one value")
    gamma = gammas[0] if gammas else None
    enhancer = Enhancer.from_checkpoint(
        checkpoint, gamma=gamma, device=cfg.device, half=cfg.half, tile=cfg.tile, conv=cfg.conv
    )
    lpips, reason = make_lpips(str(enhancer.device)) if cfg.lpips else (None, "disabled (lpips=false)")
    if reason and cfg.lpips is True:  # asked for by name: say why not; under auto, metrics.json records it
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
        gammas=gammas,
        no_reference=cfg.noref,
        thumbnails=out_dir / THUMB_DIR,
    )
    paired = result.paired
    meta = {
        "checkpoint": str(checkpoint.resolve()),
        "test_dir": str((pairs[0][0].parent.parent if paired else pairs[0][0].parent).resolve()),
        "scored": "saved files" if cfg.score_saved else "in-memory images",
        "jpeg_quality": cfg.jpeg_quality,
        "lpips_skipped": reason,
        "conv": enhancer.conv,  # winograd or direct: equal to float rounding, the scores to 0.001 dB (README)
    }
    metrics = write_results(result, out_dir, meta)
    report = write_report(result, metrics, out_dir)
    print_table(metrics)
    print(f"results: {out_dir / 'metrics.json'}")
    print(f"report: {report}")
    return metrics


def print_table(metrics: dict) -> None:
    """The summary: input and enhanced (one row per γ) under every measure that was scored."""
    keys = [k for k in ("psnr", "ssim") if metrics["paired"]]
    keys += [k for k in ("niqe", "loe") if "niqe" in metrics["protocol"]]
    labels = {"psnr": "PSNR (dB)", "ssim": "SSIM", "niqe": "NIQE", "loe": "LOE"}
    digits = {"psnr": 3, "ssim": 4, "niqe": 3, "loe": 1}

    def shown(value, key):
        return "n/a" if value is None else f"{value:.{digits[key]}f}"

    gammas = metrics["gammas"]
    source = metrics.get("test_dir", "")
    conv = f", {metrics['conv']} convolutions" if "conv" in metrics else ""
    print(f"pairlie-test: {metrics['count']} images of {source}, gamma {', '.join(f'{g:g}' for g in gammas)}{conv}")
    table = Table()
    for column in ("", *(labels[k] for k in keys)):
        table.add_column(column, justify="right")
    table.add_row("input", *(shown(metrics.get(f"input_{k}"), k) if k != "loe" else "" for k in keys))
    for row in metrics["gamma_table"]:
        label = "enhanced" if len(gammas) == 1 else f"enhanced, gamma {row['gamma']:g}"
        table.add_row(label, *(shown(row[k], k) for k in keys))
    Console().print(table)
    if len(gammas) > 1:
        best = metrics["best_gamma"]
        print("best gamma: " + ", ".join(f"{labels[k]} {best[k]:g}" for k in keys if k in best))
    if metrics["niqe_na"]:
        name, reason = next(iter(metrics["niqe_na"].items()))
        print(f"NIQE n/a for {len(metrics['niqe_na'])} image(s), e.g. {name}: {reason}")


SPEC = CliSpec(
    name="pairlie-test",
    config_name="test",
    summary="score a checkpoint on low/high pairs (PSNR, SSIM as in the paper) or on a folder of images "
    "(NIQE, LOE), writing metrics.json and report.html.",
    usage="pairlie-test [ckpt_path=FILE] [data=lol|sice | data.test_dir=DIR] [model.gamma=G|[G,...]] [key=value ...]",
    examples=[
        "pairlie-test                                    # the latest pairlie-train run, on its demo pairs",
        "pairlie-test ckpt_path=PairLIE.pth data=lol paths.data_dir=/data",
        "pairlie-test ckpt_path=PairLIE.pth data.test_dir=photos/   # no low/+high/: NIQE and LOE only",
        "pairlie-test ckpt_path=X.ckpt model.gamma=[0.1,0.14,0.2,0.3]  # every γ from one decomposition",
    ],
    groups=["data"],
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
