"""Find and check training scenes and low/high test pairs before any training starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pairlie.data.bundle import bundle_hint, in_bundle
from pairlie.errors import ConfigError, DataError
from pairlie.io.images import image_size, list_images

PAIRINGS = ("auto", "name", "sice")
# (low, high) sub-folder names of a paired set: pairlie's, then the authors' LOL-test and SICE-test as unpacked
PAIR_FOLDERS = (("low", "high"), ("raw", "reference"), ("image", "label"))


@dataclass(frozen=True)
class Scene:
    """One static scene: two or more exposures of the same view, all of one size."""

    name: str
    paths: tuple[Path, ...]
    size: tuple[int, int]  # (width, height)


def natural_key(name: str) -> tuple:
    """Sort key that puts ``9`` before ``10`` and ``2_1`` before ``10_1``."""
    parts: list[tuple[int, int | str]] = []
    token = ""
    for ch in name + "\0":
        if token and (ch.isdigit() != token[-1].isdigit() or ch == "\0"):
            parts.append((0, int(token)) if token.isdigit() else (1, token))
            token = ""
        if ch != "\0":
            token += ch
    return tuple(parts)


def _require_folder(path: Path, key: str, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        hint = bundle_hint(path)
        if hint:  # a public set a preset (data=lol, data=sice) looks for under paths.data_dir
            what = f"{what}, or set paths.data_dir (or $PAIRLIE_DATA_DIR) to the folder holding {path.name}/"
        raise DataError(f"{key}={path}: folder does not exist{hint}; point {key} at {what}")
    return path


def discover_scenes(root: str | Path, patch_size: int | None, key: str = "data.train_dir") -> list[Scene]:
    """Every scene sub-folder of ``root``, checked: ≥ 2 images, one size per scene, not smaller than the crop.

    A missing ``root`` named like a set of the authors' bundle (``SICE-train``, ``LOL-train``) is
    found in the bundle's ``PairLIE-training-dataset/`` beside it, taking that set's scenes only.
    """
    root, names = Path(root), None
    found = in_bundle(root)
    if found is not None:
        root, names = found
    root = _require_folder(root, key, "a folder holding one sub-folder of exposures per scene")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (names is None or p.name in names)),
        key=lambda p: natural_key(p.name),
    )
    if not folders:
        raise DataError(f"{key}={root}: no scene sub-folders; put each scene's exposures in a folder of its own")
    scenes = []
    for folder in folders:
        paths = list_images(folder)
        if len(paths) < 2:
            raise DataError(
                f"{folder}: scene has {len(paths)} image(s); each scene needs at least two exposures "
                "of the same view (png/jpg/jpeg/bmp/tif); add one or remove the folder"
            )
        sizes = [image_size(p) for p in paths]
        for path, size in zip(paths[1:], sizes[1:], strict=True):
            if size != sizes[0]:
                raise DataError(
                    f"{folder}: exposures differ in size ({paths[0].name} is {sizes[0][0]}x{sizes[0][1]}, "
                    f"{path.name} is {size[0]}x{size[1]}); exposures of one scene must be aligned and equally sized"
                )
        if patch_size and min(sizes[0]) < patch_size:
            raise DataError(
                f"{paths[0]}: image is {sizes[0][0]}x{sizes[0][1]}, smaller than data.patch_size={patch_size}; "
                "lower data.patch_size or remove the scene"
            )
        scenes.append(Scene(folder.name, tuple(paths), sizes[0]))
    return scenes


def _located(root: str | Path) -> Path:
    """``root``, else the same set in the authors' bundle beside it (``LOL-test``, ``SICE-test``, ``MEF``)."""
    found = in_bundle(root)
    return Path(root) if found is None else found[0]


def pair_folders(root: Path) -> tuple[Path, Path] | None:
    """``root``'s (low, high) sub-folders, or None for a folder of images without references.

    ``low/`` and ``high/`` if either is there; else the authors' ``raw/`` and ``reference/`` or
    ``image/`` and ``label/`` where both are, or where one is and ``root`` holds no images itself
    (a photo folder with a ``raw/`` sub-folder stays a photo folder).
    """
    if (root / "low").is_dir() or (root / "high").is_dir():
        return root / "low", root / "high"
    for low, high in PAIR_FOLDERS[1:]:
        if (root / low).is_dir() and (root / high).is_dir():
            return root / low, root / high
    for low, high in PAIR_FOLDERS[1:]:
        if ((root / low).is_dir() or (root / high).is_dir()) and not list_images(root):
            return root / low, root / high
    return None


def discover_pairs(root: str | Path, pairing: str = "auto", key: str = "data.val_dir") -> list[tuple[Path, Path]]:
    """``(low, high)`` paths from ``root/low`` and ``root/high`` (or the authors' ``raw``/``reference``, ``image``/``label``).

    ``pairing``: ``name`` pairs equal file names; ``sice`` pairs ``low/<seq>_<k>.ext`` with
    ``high/<seq>.ext`` (any image extension); ``auto`` tries the equal name, then the SICE rule.
    """
    if pairing not in PAIRINGS:
        raise ConfigError(f"data.pairing={pairing!r}: must be one of {', '.join(PAIRINGS)}")
    root = _require_folder(_located(root), key, "a folder with low/ and high/ sub-folders")
    low_dir, high_dir = pair_folders(root) or (root / "low", root / "high")
    for sub in (low_dir, high_dir):
        if not sub.is_dir():
            raise DataError(
                f"{key}={root}: missing sub-folder {sub.name}/; a test folder holds low/ and high/ "
                "(or the authors' raw/ and reference/, image/ and label/)"
            )
    lows = list_images(low_dir)
    if not lows:
        raise DataError(f"{low_dir}: no images (png/jpg/jpeg/bmp/tif); add the low-light inputs")
    highs = list_images(high_dir)
    by_name = {p.name: p for p in highs}
    by_stem: dict[str, Path] = {}
    for p in highs:
        by_stem.setdefault(p.stem, p)
    pairs = []
    for low in sorted(lows, key=lambda p: natural_key(p.name)):
        high = None
        if pairing in ("auto", "name"):
            high = by_name.get(low.name)
        if high is None and pairing in ("auto", "sice"):
            high = by_stem.get(low.stem.split("_")[0])
        if high is None:
            wanted = low.name if pairing == "name" else f"{low.name} or {low.stem.split('_')[0]}.<ext>"
            raise DataError(
                f"{low}: no partner in {high_dir} (looked for {wanted}); add it, remove the low image, "
                f"or set data.pairing to one of {', '.join(PAIRINGS)}"
            )
        pairs.append((low, high))
    return pairs


def discover_test_images(
    root: str | Path, pairing: str = "auto", key: str = "data.test_dir"
) -> list[tuple[Path, Path | None]]:
    """``(low, high)`` pairs of a folder with ``low/`` and ``high/``; else ``(image, None)`` for each image in it.

    A folder of images without references (LIME, NPE, MEF, DICM, your own photos) is scored with
    no-reference measures only.
    """
    root = _require_folder(_located(root), key, "a folder with low/ and high/ sub-folders, or a folder of images")
    if pair_folders(root) is not None:
        return discover_pairs(root, pairing, key)
    images = list_images(root)
    if not images:
        raise DataError(
            f"{key}={root}: no images (png/jpg/jpeg/bmp/tif) and no low/ + high/ sub-folders; "
            "point it at a folder of low-light images or a paired test set"
        )
    return [(p, None) for p in sorted(images, key=lambda p: natural_key(p.name))]
