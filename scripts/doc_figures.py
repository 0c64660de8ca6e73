#!/usr/bin/env python
"""The documentation's pictures, from the demo set's two held-out photographs and a net trained on the demo.

    python scripts/doc_figures.py                      # trains the demo as `make demo` does, then draws
    python scripts/doc_figures.py --ckpt logs/train/runs/<time>/checkpoints/last.ckpt

Without ``--ckpt`` it runs ``pairlie-train logger=none`` (the bare command: the demo set and its
328-step schedule, minutes on a CPU) in a temporary folder and uses the run's best checkpoint. The
photographs are the demo's validation pairs (scikit-image's ``chelsea`` and ``coffee`` with simulated
low light, and the originals), built on first use where ``paths.demo_dir`` points. It writes into
``--out`` (default ``docs/images``):

- ``before-after.jpg``: each photograph's low-light input, pairlie's output and the original (home page);
- ``gamma.jpg``: one input enhanced at several γ (Enhancing photos);
- ``method.jpg``: one input with its illumination L, reflectance R and I = L^γ · R (Method).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
PANEL = (240, 160)  # width, height of one picture in a figure (the photographs are 3:2)
LABEL = 22  # pixels of white band above each picture, for its caption
GAMMAS = (0.1, 0.14, 0.2, 0.3)
METHOD_PHOTO = "coffee.png"
QUALITY = 85  # JPEG: photographs stay well under 100 KB a figure


def demo_root() -> Path:
    """The demo set as ``pairlie-train`` finds it (``paths.demo_dir``, ``PAIRLIE_DEMO_DIR``), built if missing."""
    from hydra import compose, initialize_config_module

    from pairlie.data.demo import build_demo
    from pairlie.train.resolvers import register

    register()
    with initialize_config_module(config_module="pairlie.configs", version_base="1.3"):
        root = Path(compose(config_name="train").paths.demo_dir)
    return build_demo(root)


def train_demo(folder: Path) -> Path:
    """The best checkpoint of ``pairlie-train`` with no arguments but no logger, run into ``folder``."""
    train = Path(sys.executable).parent / "pairlie-train"
    command = [str(train), "logger=none", f"hydra.run.dir={folder}"]
    print("training the demo:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    best = sorted((folder / "checkpoints").glob("epoch*.ckpt"))
    return best[-1] if best else folder / "checkpoints" / "last.ckpt"


def panel(image: np.ndarray | Image.Image, caption: str) -> Image.Image:
    """``image`` resized to one panel, under a white band holding ``caption``."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = Image.new("RGB", (PANEL[0], PANEL[1] + LABEL), "white")
    out.paste(picture.convert("RGB").resize(PANEL, Image.LANCZOS), (0, LABEL))
    font = ImageFont.load_default(size=14)
    ImageDraw.Draw(out).text((PANEL[0] // 2, LABEL // 2), caption, fill="black", font=font, anchor="mm")
    return out


def grid(rows: list[list[Image.Image]], gap: int = 4) -> Image.Image:
    """Panels in rows, ``gap`` white pixels apart."""
    width = max(len(r) for r in rows) * (PANEL[0] + gap) - gap
    height = len(rows) * (PANEL[1] + LABEL + gap) - gap
    out = Image.new("RGB", (width, height), "white")
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            out.paste(picture, (j * (PANEL[0] + gap), i * (PANEL[1] + LABEL + gap)))
    return out


def draw(checkpoint: Path, demo: Path, out: Path) -> list[Path]:
    """Write the three figures into ``out``; returns their paths."""
    from pairlie.infer.enhancer import Enhancer
    from pairlie.io.images import quantize, read_rgb, to_tensor
    from pairlie.model.nets import enhance

    enhancer = Enhancer.from_checkpoint(checkpoint, device="cpu", precision="fp32", conv="direct")
    gamma = enhancer.gamma
    photos = sorted((demo / "val" / "low").iterdir())
    rows, method, gammas = [], None, None
    for low_path in photos:
        low = read_rgb(low_path)[0]
        high = read_rgb(demo / "val" / "high" / low_path.name)[0]
        parts = enhancer.decompose(to_tensor(low))
        rows.append(
            [
                panel(quantize(to_tensor(low)), "input (low light)"),
                panel(quantize(parts.enhanced[0]), f"pairlie (gamma {gamma:g})"),
                panel(quantize(to_tensor(high)), "original photograph"),
            ]
        )
        if low_path.name == METHOD_PHOTO:
            illumination = quantize(parts.illumination[0].expand(3, -1, -1))
            method = [
                panel(quantize(to_tensor(low)), "input"),
                panel(illumination, "illumination L"),
                panel(quantize(parts.reflectance[0]), "reflectance R"),
                panel(quantize(parts.enhanced[0]), f"I = L^{gamma:g} · R"),
            ]
            gammas = [panel(quantize(to_tensor(low)), "input")] + [
                panel(quantize(enhance(parts.illumination, parts.reflectance, g)[0]), f"gamma {g:g}") for g in GAMMAS
            ]
    if method is None:
        raise SystemExit(f"{demo / 'val' / 'low'}: no {METHOD_PHOTO}; is it the demo set?")
    out.mkdir(parents=True, exist_ok=True)
    figures = {"before-after.jpg": grid(rows), "gamma.jpg": grid([gammas]), "method.jpg": grid([method])}
    written = []
    for name, figure in figures.items():
        figure.save(out / name, quality=QUALITY, optimize=True, progressive=True)
        written.append(out / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="a pairlie .ckpt or PairLIE.pth (default: train the demo now)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder for the figures")
    args = parser.parse_args()
    demo = demo_root()
    with tempfile.TemporaryDirectory(prefix="pairlie-figures-") as tmp:
        checkpoint = args.ckpt or train_demo(Path(tmp) / "run")
        for path in draw(checkpoint, demo, args.out):
            print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
