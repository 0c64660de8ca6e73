"""Score an enhancer on low/high pairs under the paper's protocol and write the results of a test run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import track

from pairlie.files import write_atomic
from pairlie.images import quantize, read_rgb, save_image, to_tensor, to_uint8
from pairlie.inference import Enhancer
from pairlie.metrics import PROTOCOL, paper_scores, psnr, ssim, to_reference_grid


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    lpips: float | None = None


@dataclass
class TestResult:
    scores: list[ImageScore] = field(default_factory=list)

    def mean(self, key: str) -> float | None:
        values = [getattr(s, key) for s in self.scores if getattr(s, key) is not None]
        return float(np.mean(values)) if values else None


def evaluate(
    enhancer: Enhancer,
    pairs: list[tuple[Path, Path]],
    out_dir: Path | None = None,
    save_images: bool = True,
    save_decomposition: bool = False,
    jpeg_quality: int = 95,
    score_saved: bool = False,
    lpips=None,
) -> TestResult:
    """Enhance every low image, score it against its high partner and the raw input against the same.

    ``score_saved=True`` scores the written file instead of the in-memory image (the authors scored
    JPEGs saved at quality 75 for SICE). Enhanced images go to ``out_dir/enhanced/`` with their
    source names and formats; with ``save_decomposition``, also ``L/``, ``R/``, ``X/`` and ``D/``
    (the removed noise, input − X, clipped at 0 as an image file must be).
    """
    result = TestResult()
    for low_path, high_path in track(pairs, description="scoring", transient=True):
        low = to_tensor(read_rgb(low_path)[0])
        ref = to_uint8(read_rgb(high_path)[0])
        out = enhancer.decompose(low)
        enhanced = out.enhanced[0]
        if out_dir is not None and (save_images or score_saved):
            target = out_dir / "enhanced" / low_path.name
            save_image(quantize(enhanced), target, jpeg_quality)
        if score_saved:
            saved = to_reference_grid(to_tensor(read_rgb(target)[0]), ref)
            score, structure = psnr(saved, ref), ssim(saved, ref)
        else:
            score, structure = paper_scores(enhanced, ref)
        input_psnr, input_ssim = paper_scores(low, ref)
        perceptual = lpips(enhanced, ref) if lpips is not None else None
        result.scores.append(ImageScore(low_path.name, score, structure, input_psnr, input_ssim, perceptual))
        if out_dir is not None and save_decomposition:
            parts = {
                "L": out.illumination[0],
                "R": out.reflectance[0],
                "X": out.denoised[0],
                "D": (low - out.denoised[0]).clamp(0, 1),
            }
            for sub, image in parts.items():
                save_image(quantize(image.expand(3, -1, -1)), out_dir / sub / low_path.name, jpeg_quality)
    return result


def write_results(result: TestResult, out_dir: Path, meta: dict) -> dict:
    """``metrics.json`` and ``per_image.csv`` in ``out_dir``; returns the metrics dict."""
    metrics = {
        "psnr": result.mean("psnr"),
        "ssim": result.mean("ssim"),
        "input_psnr": result.mean("input_psnr"),
        "input_ssim": result.mean("input_ssim"),
        "lpips": result.mean("lpips"),
        "count": len(result.scores),
        **meta,
        "protocol": PROTOCOL,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "psnr", "ssim", "input_psnr", "input_ssim", "lpips"])
    for s in result.scores:
        writer.writerow(
            [
                s.name,
                f"{s.psnr:.4f}",
                f"{s.ssim:.6f}",
                f"{s.input_psnr:.4f}",
                f"{s.input_ssim:.6f}",
                "" if s.lpips is None else f"{s.lpips:.6f}",
            ]
        )
    write_atomic(out_dir / "per_image.csv", buffer.getvalue())
    return metrics


def make_lpips(device: str = "cpu"):
    """``(score_fn, None)`` where LPIPS (AlexNet) can run here, else ``(None, reason)``; never raises."""
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
    except Exception as exc:  # missing torchvision, no weights offline, ...
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]

    def score(enhanced, ref: np.ndarray) -> float:
        pred = to_tensor(to_reference_grid(enhanced, ref))[None].to(device)
        return float(metric(pred, to_tensor(ref)[None].to(device)))

    return score, None
