#!/usr/bin/env python
"""Winograd against the exact path with the official weights, on every LOL-test and SICE-test image; prints JSON.

    python scripts/winograd_exactness.py [--data ../shared/data] [--weights ../shared/weights/PairLIE.pth]

Two checks: the enhanced images, quantised as pairlie saves them, differ by at most this many grey
levels (and in this share of pixel values); and ``pairlie-test`` run as users run it, ``conv=direct``
against ``conv=winograd``, gives these PSNR/SSIM (issue 15: within 0.001 dB and 0.0001). Took 49 min
on two CPU cores shared with other jobs (four passes over the 165 images). CI checks every LOL-test
image and every 10th SICE-test one (tests/test_winograd.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from pairlie.infer.enhancer import Enhancer
from pairlie.io.images import quantize, read_rgb, to_tensor

REPO = Path(__file__).resolve().parents[1]
SETS = {"lol": ("LOL-test", 0.14), "sice": ("SICE-test", 0.2)}


def grey_levels(weights: Path, folder: Path, gamma: float) -> dict:
    """The largest difference between the two paths' saved images, and how many values differ, over ``folder/low``."""
    fast = Enhancer.from_checkpoint(weights, gamma=gamma, device="cpu", conv="winograd")
    exact = Enhancer.from_checkpoint(weights, gamma=gamma, device="cpu", conv="direct")
    worst, differing, values = 0, 0, 0
    for low in sorted((folder / "low").iterdir()):
        image = to_tensor(read_rgb(low)[0])
        a, b = (quantize(e.decompose(image).enhanced[0]).astype(int) for e in (fast, exact))
        worst = max(worst, int(np.abs(a - b).max()))
        differing += int((a != b).sum())
        values += a.size
    return {
        "images": len(list((folder / "low").iterdir())),
        "max_grey_levels": worst,
        "share_differing": differing / values,
    }


def scores(data: Path, weights: Path, preset: str, conv: str, out: Path) -> dict:
    """metrics.json of ``pairlie-test`` on ``preset`` with ``conv``."""
    test = shutil.which("pairlie-test", path=str(Path(sys.executable).parent)) or "pairlie-test"
    args = [f"ckpt_path={weights}", f"data={preset}", f"paths.data_dir={data}", f"conv={conv}"]
    args += ["save_images=false", "noref=false", f"hydra.run.dir={out}"]
    subprocess.run([test, *args], check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--weights", type=Path, default=REPO.parent / "shared" / "weights" / "PairLIE.pth")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset, (folder, gamma) in SETS.items():
            runs = {
                conv: scores(args.data, args.weights, preset, conv, Path(tmp) / f"{preset}-{conv}")
                for conv in ("direct", "winograd")
            }
            result[preset] = {
                **grey_levels(args.weights, args.data / folder, gamma),
                **{f"{conv}_{key}": runs[conv][key] for conv in runs for key in ("psnr", "ssim")},
                "psnr_difference": runs["winograd"]["psnr"] - runs["direct"]["psnr"],
                "ssim_difference": runs["winograd"]["ssim"] - runs["direct"]["ssim"],
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
