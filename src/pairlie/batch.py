"""Enhance a file or a folder tree of images into another folder, safely."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from rich.progress import track

from pairlie.errors import ConfigError, DataError
from pairlie.images import IMAGE_EXTENSIONS, quantize, read_rgb, save_image, to_tensor
from pairlie.inference import Enhancer

ALPHA_FORMATS = frozenset({".png", ".tif", ".tiff"})


def collect_inputs(source: str | Path) -> list[tuple[Path, Path]]:
    """``(file, path relative to the output folder)`` for a file, or every image under a folder.

    Folders are walked without following symbolic links (no loops); a folder named like an image
    (``x.jpg/``) is walked, not read.
    """
    source = Path(source).expanduser()
    if source.is_file():
        return [(source, Path(source.name))]
    if not source.is_dir():
        raise DataError(f"input={source}: no such file or folder")
    items = []
    for folder, dirs, files in os.walk(source, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((path, path.relative_to(source)))
    if not items:
        raise DataError(f"input={source}: no images (png/jpg/jpeg/bmp/tif) in this folder or below")
    return items


def check_output(source: Path, output: Path, items: list[tuple[Path, Path]], overwrite: bool) -> None:
    """Refuse an output that would overwrite an input, or existing outputs unless ``overwrite``."""
    source, output = Path(source).expanduser().resolve(), Path(output).expanduser().resolve()
    if source.is_dir() and (output == source or output.is_relative_to(source)):
        raise ConfigError(f"output={output}: is inside input={source}; choose an output folder outside the input")
    # os.path.realpath, unlike Path.resolve, does not raise on a symlink loop
    inputs = {os.path.realpath(src) for src, _ in items}
    targets = [output / rel for _, rel in items]
    clash = [t for t in targets if os.path.realpath(t) in inputs]
    if clash:
        raise ConfigError(f"output={output}: would overwrite the input {clash[0]}; choose another output folder")
    existing = [t for t in targets if t.exists() or t.is_symlink()]
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
) -> list[tuple[Path, str]]:
    """Enhance every item into ``output``; returns ``(file, reason)`` for each one that could not be read."""
    failures = []
    for src, rel in track(items, description="enhancing"):
        try:
            rgb, alpha = read_rgb(src, keep_alpha=keep_alpha)
        except DataError as exc:
            failures.append((src, str(exc).removeprefix(f"{src}: ")))
            continue
        image = Image.fromarray(quantize(enhancer.decompose(to_tensor(rgb)).enhanced[0]))
        if alpha is not None and rel.suffix.lower() in ALPHA_FORMATS:
            image.putalpha(Image.fromarray(alpha))
        save_image(image, Path(output) / rel, jpeg_quality)
    return failures
