"""Summaries of Hydra multiruns: every job's overrides and final validation scores, best first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pairlie.evaluate.collapse import FLAT_METRIC
from pairlie.io.files import write_atomic

RESULT_FILE = "val_metrics.json"


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder under ``sweep_dir`` that wrote ``val_metrics.json``, best val PSNR first."""
    rows = []
    for result in Path(sweep_dir).glob(f"*/{RESULT_FILE}"):
        job = result.parent
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        metrics = json.loads(result.read_text())
        rows.append({"job": job.name, "overrides": overrides, **metrics})
    # the overrides that differ between jobs: what the sweep varied
    varying = (
        {o for r in rows for o in r["overrides"]} - set.intersection(*(set(r["overrides"]) for r in rows))
        if rows
        else set()
    )
    for r in rows:
        r["swept"] = " ".join(o for o in r["overrides"] if o in varying)
    return sorted(rows, key=lambda r: -(r.get("val/psnr") or float("-inf")))


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'job':>4}  {'val PSNR':>9}  {'val SSIM':>8}  swept overrides"]
    for r in rows:
        psnr, ssim = r.get("val/psnr"), r.get("val/ssim")
        # a collapsed job's score (flat grey outputs) ties with others' and means nothing: say so
        flat = "  (outputs constant)" if (r.get(FLAT_METRIC) or 0) >= 0.5 else ""
        lines.append(
            f"{r['job']:>4}  {psnr if psnr is None else f'{psnr:9.3f}'}  {ssim if ssim is None else f'{ssim:8.4f}'}  {r['swept']}{flat}"
        )
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write ``summary.json`` and print the ranking."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows:
            return
        write_atomic(sweep_dir / "summary.json", json.dumps(rows, indent=2) + "\n")  # never half a summary
        print(f"\nsweep summary ({sweep_dir / 'summary.json'}), best first:\n{format_table(rows)}")


def main() -> None:
    """``python -m pairlie.train.sweep SWEEP_DIR``: print the ranking of a (finished or running) multirun."""
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m pairlie.train.sweep SWEEP_DIR")
    print(format_table(collect(sys.argv[1])))


if __name__ == "__main__":
    main()
