"""``pairlie-enhance``: enhance a photo or a folder of photos of any size (configs/enhance.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pairlie.cli.common import CONFIG_PATH, apply_speed_settings, run_cli, run_reporting_errors
from pairlie.configuration import CliSpec
from pairlie.errors import ConfigError
from pairlie.infer.enhancer import Enhancer
from pairlie.infer.folders import GAMMA_FILE, check_output, collect_inputs, enhance_files, write_gamma_file
from pairlie.io.images import check_jpeg_quality, check_max_pixels
from pairlie.train.runs import resolve_checkpoint


def enhance(cfg: DictConfig) -> int:
    """Enhance ``cfg.input`` into ``cfg.output``; returns the number of files that failed."""
    apply_speed_settings(cfg)
    if cfg.alpha not in ("keep", "drop"):
        raise ConfigError(f"alpha={cfg.alpha!r}: must be keep or drop")
    check_jpeg_quality(cfg.jpeg_quality)
    check_max_pixels(cfg.max_pixels)
    auto = cfg.model.gamma == "auto"
    brightness = cfg.brightness
    if auto and (isinstance(brightness, bool) or not isinstance(brightness, (int, float)) or not 0 < brightness < 1):
        raise ConfigError(f"brightness={brightness!r}: must be a mean brightness between 0 and 1 (default 0.4)")
    source, output = Path(cfg.input).expanduser(), Path(cfg.output).expanduser()
    inputs = collect_inputs(source)
    items = inputs.items
    check_output(source, output, items, cfg.overwrite, cfg.format, extra=(GAMMA_FILE,) if auto else ())
    enhancer = Enhancer.from_checkpoint(
        resolve_checkpoint(cfg),
        gamma=None if auto else cfg.model.gamma,
        trust=cfg.trust,
        device=cfg.device,
        half=cfg.half,
        tile=cfg.tile,
        overlap=cfg.overlap,
        conv=cfg.conv,
        precision=cfg.precision,
        # int8's activation scales: from the photos given, else from the ones to enhance
        calibration=[path for path, _ in items]
        if cfg.calibration is None and cfg.precision == "int8"
        else cfg.calibration,
    )
    chosen: list[tuple[Path, float, float]] = []
    failures, notes = enhance_files(
        enhancer,
        items,
        output,
        keep_alpha=cfg.alpha == "keep",
        jpeg_quality=cfg.jpeg_quality,
        fmt=cfg.format,
        brightness=float(brightness) if auto else None,
        chosen=chosen,
        max_pixels=cfg.max_pixels,
    )
    if auto:
        write_gamma_file(output / GAMMA_FILE, chosen)
        for path, gamma, mean in chosen:
            print(f"gamma {gamma:.3f}  brightness {mean:.3f}  {path}")
        how = f"gamma auto for brightness {brightness:g}, written to {output / GAMMA_FILE}"
    else:
        how = f"gamma {enhancer.gamma:g}"
    what = enhancer.precision
    if enhancer.int8 is not None:
        what += f", calibrated on {enhancer.int8.calibrated} image(s)"
    print(f"enhanced {len(items) - len(failures)} of {len(items)} image(s) into {output} ({how}, {what})")
    for path, note in notes:
        print(f"note: {path}: {note}")
    for path, reason in inputs.skipped:
        print(f"skipped: {path}: {reason}")
    for path, reason in failures:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    return len(failures)


SPEC = CliSpec(
    name="pairlie-enhance",
    config_name="enhance",
    summary="enhance a low-light photo, or a folder of them, of any size.",
    usage="pairlie-enhance input=FILE|DIR output=DIR [ckpt_path=FILE] [model.gamma=G|auto] [key=value ...]",
    examples=[
        "pairlie-enhance ckpt_path=official input=photos/ output=enhanced/   # the authors' weights, downloaded once",
        "pairlie-enhance ckpt_path=official input=dark.jpg output=out/ model.gamma=0.14",
        "pairlie-enhance ckpt_path=official input=photos/ output=out/ model.gamma=auto brightness=0.45",
        "pairlie-enhance input=photos/ output=out/ format=png overwrite=true   # latest pairlie-train run",
    ],
    key_files=[("enhance.yaml", "")],
)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="enhance")
def hydra_main(cfg: DictConfig) -> None:
    """The Hydra app; exits 1 when some file could not be enhanced."""
    if run_reporting_errors(enhance, cfg):
        sys.exit(1)


def main() -> None:
    """Entry point of ``pairlie-enhance``."""
    run_cli(SPEC, hydra_main)


if __name__ == "__main__":
    main()
