"""Score an enhancer on a test set under the paper's protocol and write the results of a test run.

Paired sets (low/ + high/) get PSNR/SSIM against the reference; every set gets the no-reference
scores of `pairlie.evaluate.noref` (NIQE of input and enhanced, LOE). Several γ are scored from one
decomposition per image: ``L**γ · R`` is all that changes with γ.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import track

from pairlie.errors import ConfigError
from pairlie.evaluate import noref
from pairlie.evaluate.collapse import flat_warning, is_flat
from pairlie.evaluate.metrics import PROTOCOL, check_ssim_size, paper_scores, psnr, ssim, to_reference_grid
from pairlie.evaluate.thumbnails import save_thumbnails
from pairlie.infer.enhancer import Enhancer
from pairlie.io.files import write_atomic
from pairlie.io.images import (
    DEFAULT_MAX_PIXELS,
    check_jpeg_quality,
    image_size,
    quantize,
    read_rgb,
    save_image,
    to_tensor,
    to_uint8,
)
from pairlie.model.nets import enhance

# measure -> whether a higher value is better; the γ table names the best γ of each
MEASURES = {"psnr": True, "ssim": True, "lpips": False, "niqe": False, "loe": False}
CSV_COLUMNS = ["name", "gamma", "psnr", "ssim", "input_psnr", "input_ssim", "lpips", "niqe", "input_niqe", "loe"]
NA = "n/a"


@dataclass
class ImageScore:
    """The scores of one image at one γ; ``None`` where a measure does not apply (no reference, n/a)."""

    name: str
    gamma: float
    psnr: float | None = None
    ssim: float | None = None
    input_psnr: float | None = None
    input_ssim: float | None = None
    lpips: float | None = None
    niqe: float | None = None
    input_niqe: float | None = None
    loe: float | None = None
    # why a NIQE is missing, e.g. "48x40 holds 0 whole 96x96 block(s); NIQE needs at least two"
    niqe_na: str | None = None
    input_niqe_na: str | None = None
    flat: bool | None = None  # no texture left in the enhanced image (pairlie.evaluate.collapse)


@dataclass
class TestResult:
    """Every image's scores at every γ, the first γ being the one whose images were saved."""

    gammas: list[float]
    paired: bool = True
    noref: bool = True
    scores: list[ImageScore] = field(default_factory=list)

    def rows(self, gamma: float | None = None) -> list[ImageScore]:
        """The scores at ``gamma`` (default: the first γ), one per image in test-set order."""
        gamma = self.gammas[0] if gamma is None else gamma
        return [s for s in self.scores if s.gamma == gamma]

    def mean(self, key: str, gamma: float | None = None) -> float | None:
        values = [getattr(s, key) for s in self.rows(gamma) if getattr(s, key) is not None]
        return float(np.mean(values)) if values else None


def gammas_to_score(gamma=None, preset=None, score_saved: bool = False) -> list[float] | None:
    """The γ a test run scores: ``gamma`` (``model.gamma``, a number or a list), else the data preset's; None: the checkpoint's.

    ``score_saved`` scores the written files, which hold one γ: a list of several is refused.
    """
    gamma = gamma if gamma is not None else preset
    if gamma is None:
        return None
    gammas = list(gamma) if isinstance(gamma, Sequence) and not isinstance(gamma, str) else [gamma]
    if not gammas:
        raise ConfigError("model.gamma=[]: give a number, or a list such as [0.1,0.14,0.2,0.3]")
    for g in gammas:
        if isinstance(g, bool) or not isinstance(g, (int, float)) or g <= 0:
            raise ConfigError(f"model.gamma={g!r}: every γ must be a number > 0 (0.2 for SICE, 0.14 for LOL)")
    if len(set(gammas)) != len(gammas):
        raise ConfigError(f"model.gamma={gammas}: lists a γ twice; list each once")
    if score_saved and len(gammas) > 1:
        raise ConfigError("score_saved=true scores the written files, which hold one γ; give model.gamma one value")
    return [float(g) for g in gammas]


def _niqe(image: np.ndarray) -> tuple[float | None, str | None]:
    try:
        return noref.niqe(image), None
    except noref.Unscorable as exc:
        return None, str(exc)


def evaluate(
    enhancer: Enhancer,
    pairs: list[tuple[Path, Path | None]],
    out_dir: Path | None = None,
    save_images: bool = True,
    save_decomposition: bool = False,
    jpeg_quality: int = 95,
    score_saved: bool = False,
    lpips=None,
    gammas: list[float] | None = None,
    no_reference: bool = True,
    thumbnails: Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> TestResult:
    """Enhance every low image and score it at every γ in ``gammas`` (default: the enhancer's γ).

    ``pairs`` are ``(low, high)``; ``high`` is ``None`` for a set without references, which gets only
    the no-reference scores. ``score_saved=True`` scores the written file instead of the in-memory
    image (the authors scored JPEGs saved at quality 75 for SICE); only for one γ. Enhanced images of
    the first γ go to ``out_dir/enhanced/`` with their source names and formats; with
    ``save_decomposition``, also ``L/``, ``R/``, ``X/`` and ``D/`` (the removed noise, input − X,
    clipped at 0 as an image file must be). ``thumbnails``: a folder for the report's small images.
    An image over ``max_pixels`` pixels (None: no cap), or a reference smaller than SSIM's window,
    raises a one-line `DataError` before anything is scored or written.
    """

    gammas = [enhancer.gamma] if gammas is None else [float(g) for g in gammas]
    if score_saved and len(gammas) > 1:
        raise ValueError("score_saved scores the written files, which hold one γ only")
    if score_saved and out_dir is None:
        raise ValueError("score_saved scores the written files: give out_dir to write them to")
    check_jpeg_quality(jpeg_quality)
    for low_path, high_path in pairs:  # from the headers: a pair that cannot be scored stops nothing half done
        if high_path is not None:
            check_ssim_size(low_path, high_path, image_size(high_path))
    result = TestResult(gammas, paired=all(high is not None for _, high in pairs), noref=no_reference)
    for low_path, high_path in track(pairs, description="scoring", transient=True):
        low_rgb = read_rgb(low_path, max_pixels=max_pixels)[0]
        low, low8 = to_tensor(low_rgb), to_uint8(low_rgb)
        ref = to_uint8(read_rgb(high_path, max_pixels=max_pixels)[0]) if high_path is not None else None
        out = enhancer.decompose(low)
        input_scores = {}
        if ref is not None:
            input_scores["input_psnr"], input_scores["input_ssim"] = paper_scores(low, ref)
        if no_reference:
            input_scores["input_niqe"], input_scores["input_niqe_na"] = _niqe(low8)
        for index, gamma in enumerate(gammas):
            # exactly what Enhancer(gamma=γ).decompose computes, from the same L and R
            enhanced = enhance(out.illumination, out.reflectance, gamma)[0]
            score = ImageScore(low_path.name, gamma, **input_scores, flat=is_flat(enhanced))
            target = out_dir / "enhanced" / low_path.name if out_dir is not None else None
            if index == 0 and target is not None and (save_images or score_saved):
                save_image(quantize(enhanced), target, jpeg_quality)
            if ref is not None:
                if score_saved:
                    saved = to_reference_grid(to_tensor(read_rgb(target, max_pixels=None)[0]), ref)
                    score.psnr, score.ssim = psnr(saved, ref), ssim(saved, ref)
                else:
                    score.psnr, score.ssim = paper_scores(enhanced, ref)
                score.lpips = lpips(enhanced, ref) if lpips is not None else None
            enhanced8 = quantize(enhanced)
            if no_reference:
                score.niqe, score.niqe_na = _niqe(enhanced8)
                score.loe = noref.loe(low8, enhanced8)
            result.scores.append(score)
            if index == 0 and thumbnails is not None:
                save_thumbnails(
                    thumbnails, low_path.name, low8, enhanced8, ref, out.illumination[0], out.reflectance[0]
                )
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


def gamma_table(result: TestResult) -> tuple[list[dict], dict]:
    """One row of mean scores per γ, and the best γ of each measure that was scored."""
    rows = [{"gamma": g, **{key: result.mean(key, g) for key in MEASURES}} for g in result.gammas]
    best = {}
    for key, higher in MEASURES.items():
        scored = [r for r in rows if r[key] is not None and math.isfinite(r[key])]
        if scored:
            pick = max if higher else min
            best[key] = pick(scored, key=lambda r: r[key])["gamma"]  # the first γ listed on a tie
    return rows, best


def write_results(result: TestResult, out_dir: Path, meta: dict) -> dict:
    """``metrics.json`` and ``per_image.csv`` in ``out_dir``; returns the metrics dict.

    The top-level means are those of the first γ; ``gamma_table`` holds every γ's, ``best_gamma``
    the best γ per measure. NIQE means are over the images it could score (``niqe_count``);
    ``niqe_na`` names the others with the reason.
    """
    rows, best = gamma_table(result)
    first = result.rows()
    flat = [s.name for s in first if s.flat]
    note = flat_warning(len(flat) / len(first) if first else None, "test images")
    metrics = {
        "psnr": result.mean("psnr"),
        "ssim": result.mean("ssim"),
        "input_psnr": result.mean("input_psnr"),
        "input_ssim": result.mean("input_ssim"),
        "lpips": result.mean("lpips"),
        "niqe": result.mean("niqe"),
        "input_niqe": result.mean("input_niqe"),
        "loe": result.mean("loe"),
        "count": len(first),
        "paired": result.paired,
        "niqe_count": sum(s.niqe is not None for s in first),
        "input_niqe_count": sum(s.input_niqe is not None for s in first),
        "niqe_na": {s.name: s.niqe_na for s in first if s.niqe_na},
        "input_niqe_na": {s.name: s.input_niqe_na for s in first if s.input_niqe_na},
        "flat": len(flat) / len(first) if first else None,  # the fraction of enhanced images with no texture
        "flat_images": flat,
        "warnings": [note] if note else [],
        **meta,
        "gamma": result.gammas[0],
        "gammas": result.gammas,
        "gamma_table": rows,
        "best_gamma": best,
        "protocol": {**PROTOCOL, **(noref.PROTOCOL if result.noref else {})},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*CSV_COLUMNS, "note"])
    for s in result.scores:
        writer.writerow([*(csv_value(s, key) for key in CSV_COLUMNS), "; ".join(_notes(s))])
    write_atomic(out_dir / "per_image.csv", buffer.getvalue())
    return metrics


def csv_value(score: ImageScore, key: str) -> str:
    """A score as per_image.csv writes it: fixed decimals, ``n/a`` for a NIQE that could not be computed."""
    value = getattr(score, key)
    if value is None:
        return NA if getattr(score, f"{key}_na", None) else ""
    digits = {"name": None, "gamma": None, "ssim": 6, "input_ssim": 6, "lpips": 6}.get(key, 4)
    return str(value) if digits is None else f"{value:.{digits}f}"


def _notes(score: ImageScore) -> list[str]:
    notes = [f"input NIQE n/a: {score.input_niqe_na}"] if score.input_niqe_na else []
    if score.niqe_na and score.niqe_na != score.input_niqe_na:
        notes.append(f"NIQE n/a: {score.niqe_na}")
    return notes


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
