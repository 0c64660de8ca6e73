"""Enhance a file or a folder tree of images into another folder, safely."""

from __future__ import annotations

import csv
import errno
import io
import os
from pathlib import Path

from PIL import Image
from rich.progress import track

from pairlie.errors import ConfigError, DataError
from pairlie.infer.enhancer import Enhancer, gamma_for_brightness
from pairlie.io.files import WriteError, check_writable_folder, write_atomic
from pairlie.io.images import (  # noqa: F401  (Inputs, collect_inputs, READABLE: also read from here)
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    READABLE,
    WRITABLE_EXTENSIONS,
    Inputs,
    check_jpeg_quality,
    collect_inputs,
    frame_count,
    is_regular_file,
    quantize,
    read_rgb,
    save_image,
    to_tensor,
)
from pairlie.model.nets import enhance

GAMMA_FILE = "gamma.csv"  # written beside the outputs by model.gamma=auto

ALPHA_FORMATS = frozenset({".png", ".tif", ".tiff", ".webp"})
OUTPUT_FORMATS = {"same": None, "png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "tif": ".tif", "webp": ".webp"}


def output_path(rel: Path, fmt: str = "same") -> Path:
    """Where an input's enhanced image goes, relative to the output folder, in format ``fmt``."""
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"format={fmt!r}: must be one of {', '.join(OUTPUT_FORMATS)}")
    suffix = OUTPUT_FORMATS[fmt] or (rel.suffix if rel.suffix.lower() in WRITABLE_EXTENSIONS else ".png")
    return rel.with_suffix(suffix) if suffix.lower() != rel.suffix.lower() else rel


def check_output(
    source: Path,
    output: Path,
    items: list[tuple[Path, Path]],
    overwrite: bool,
    fmt: str = "same",
    extra: tuple[str, ...] = (),
) -> None:
    """Refuse an output that would overwrite an input, two inputs writing one file, or existing outputs unless ``overwrite``.

    ``extra``: other files the run writes into ``output`` (``gamma.csv``), kept unless ``overwrite`` too. No
    enhanced image can land on one of them: inputs are images, and outputs keep an image suffix.
    An output that is a file, lies under one, or cannot be written is refused too, before any work.
    """
    check_writable_folder(output, "output")
    source, output = Path(source).expanduser().resolve(), Path(output).expanduser().resolve()
    if source.is_dir() and (output == source or output.is_relative_to(source)):
        raise ConfigError(f"output={output}: is inside input={source}; choose an output folder outside the input")
    # os.path.realpath, unlike Path.resolve, does not raise on a symlink loop
    inputs = {os.path.realpath(src) for src, _ in items}
    targets = [output / output_path(rel, fmt) for _, rel in items]
    clash = [t for t in targets if os.path.realpath(t) in inputs]
    if clash:
        raise ConfigError(f"output={output}: would overwrite the input {clash[0]}; choose another output folder")
    seen: dict[Path, tuple[Path, Path]] = {}
    for (src, rel), target in zip(items, targets, strict=True):
        if target in seen:
            first, first_rel = seen[target]
            # format=same keeps each file's suffix, but GIF (and other unwritable formats) become PNG
            fix = (
                "use format=same to keep each file's format, or rename one of them"
                if fmt != "same" and output_path(rel) != output_path(first_rel)
                else "rename one of them, or enhance them into separate output folders"
            )
            raise ConfigError(f"format={fmt}: {first.name} and {src.name} would both be written to {target}; {fix}")
        seen[target] = (src, rel)
    existing = [t for t in [*targets, *(output / name for name in extra)] if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise ConfigError(
            f"output={output}: {len(existing)} file(s) already exist, e.g. {existing[0].name}; "
            "pass overwrite=true to replace them"
        )


def enhance_files(
    enhancer: Enhancer,
    items: list[tuple[Path, Path]],
    output: Path,
    keep_alpha: bool = True,
    jpeg_quality: int = 95,
    fmt: str = "same",
    brightness: float | None = None,
    chosen: list[tuple[Path, float, float]] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Enhance every item into ``output``.

    Returns ``(failures, notes)``: ``(file, reason)`` for each file that could not be read (or is
    over ``max_pixels`` pixels; None: no cap), and
    ``(file, note)`` for each one enhanced with a caveat (first frame of an animation, GIF as PNG).
    A file that cannot be written for want of space or permission stops the batch with a one-line
    `WriteError` (every later file would fail the same way); the images
    written before it are kept.
    With ``brightness``, each image gets the γ that brings its mean to that value
    (`pairlie.infer.enhancer.gamma_for_brightness`), appended to ``chosen`` as
    ``(output path relative to output, γ, mean of the written image)``.
    """
    check_jpeg_quality(jpeg_quality)
    failures, notes = [], []
    for done, (src, rel) in enumerate(track(items, description="enhancing")):
        try:
            rgb, alpha = read_rgb(src, keep_alpha=keep_alpha, max_pixels=max_pixels)
        except DataError as exc:
            failures.append((src, str(exc).removeprefix(f"{src}: ")))
            continue
        target = output_path(rel, fmt)
        frames = frame_count(src)
        if frames > 1:
            notes.append((src, f"first of its {frames} frames/pages enhanced"))
        if target.suffix.lower() != rel.suffix.lower() and fmt == "same":
            notes.append((src, f"written as {target.suffix[1:].upper()} ({rel.suffix[1:].upper()} is not written)"))
        out = enhancer.decompose(to_tensor(rgb))
        enhanced = out.enhanced[0]
        if brightness is not None:
            gamma = gamma_for_brightness(out.illumination[0], out.reflectance[0], brightness)
            enhanced = enhance(out.illumination[0], out.reflectance[0], gamma)
        array = quantize(enhanced)
        if brightness is not None and chosen is not None:
            chosen.append((target, gamma, float(array.mean()) / 255.0))
        image = Image.fromarray(array)
        if alpha is not None and target.suffix.lower() in ALPHA_FORMATS:
            image.putalpha(Image.fromarray(alpha))
        try:
            save_image(image, Path(output) / target, jpeg_quality)
        except WriteError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.EISDIR):  # this file's name or place only
                failures.append((src, str(exc)))
                continue
            written = done - len(failures)
            raise DataError(f"output={output}: {exc} ({written} image(s) written before it are kept)") from None
    return failures, notes


def write_gamma_file(path: Path, chosen: list[tuple[Path, float, float]]) -> None:
    """``gamma.csv``: each enhanced file (relative to the output folder), its γ and its mean brightness."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "gamma", "brightness"])
    for rel, gamma, mean in chosen:
        writer.writerow([rel.as_posix(), f"{gamma:.3f}", f"{mean:.4f}"])
    write_atomic(path, buffer.getvalue())
