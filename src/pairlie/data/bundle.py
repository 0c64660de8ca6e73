"""The PairLIE authors' data bundle as it unpacks: found where pairlie's own folder of the same set is missing.

The bundle (linked from zhenqifu/PairLIE's README) unpacks as::

    PairLIE-testing-dataset/LOL-test/raw/<id>.png          reference/<id>.png
    PairLIE-testing-dataset/SICE-test/image/<seq>_<k>.JPG  label/<seq>.JPG
    PairLIE-testing-dataset/MEF/*.png
    PairLIE-training-dataset/<n>/                          LOL scenes 1-50 and 230-324, SICE scenes 51-229

so ``paths.data_dir=<the bundle>`` serves ``data=lol`` and ``data=sice`` without copying or renaming.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("pairlie")

TESTING = "PairLIE-testing-dataset"
TRAINING = "PairLIE-training-dataset"
# the scene folders of each set in the authors' one training folder (both sets in it, numbered apart)
LOL_SCENES = (*range(1, 51), *range(230, 325))
SICE_SCENES = tuple(range(51, 230))
# pairlie's folder name -> (the same set's path in the bundle, the scene folders that belong to it)
SETS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "LOL-test": (f"{TESTING}/LOL-test", None),
    "SICE-test": (f"{TESTING}/SICE-test", None),
    "MEF": (f"{TESTING}/MEF", None),
    "LOL-train": (TRAINING, LOL_SCENES),
    "SICE-train": (TRAINING, SICE_SCENES),
}


def in_bundle(folder: str | Path) -> tuple[Path, tuple[str, ...] | None] | None:
    """Where the authors' bundle beside a missing ``folder`` holds the same set, and the scene names it takes there.

    None when ``folder`` exists (pairlie's layout is used as it is), is not a set the bundle
    holds, or the bundle's folder is not there either.
    """
    folder = Path(folder).expanduser()
    if folder.exists() or folder.name not in SETS:
        return None
    relative, scenes = SETS[folder.name]
    candidate = folder.parent / relative
    if not candidate.is_dir():
        return None
    log.info("%s is not there: using the authors' bundle as unpacked, %s", folder, candidate)
    return candidate, None if scenes is None else tuple(str(n) for n in scenes)


def bundle_hint(folder: str | Path) -> str:
    """`` (nor the authors' bundle's <path>)`` for a set the bundle holds, else nothing: the rest of a one-line message."""
    folder = Path(folder).expanduser()
    if folder.name not in SETS:
        return ""
    return f" (nor the authors' bundle's {folder.parent / SETS[folder.name][0]})"
