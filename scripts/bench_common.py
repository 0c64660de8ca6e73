"""What scripts/benchmark.py and scripts/learning_curve.py share: the conv option, and pairlie-train as a user runs it.

The conv option (``conv="auto"|"winograd"|"direct"`` of ``Enhancer`` and ``PairLIEModule``, Hydra's
``model.conv``) arrives with the Winograd path of issue 15. Until then only today's exact path
exists: the helpers here ask for ``conv`` only where pairlie takes it, run "direct" as today's
path, and say that "winograd" cannot run. Every such guard is in this file.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

WINOGRAD_MISSING = "this pairlie has no conv= option yet: the Winograd path (issue 15) has not landed"


class Unavailable(Exception):
    """A column or run that cannot be measured here; the message says why (it goes into the JSON)."""


def conv_kwargs(cls, conv: str) -> dict:
    """``{"conv": conv}`` for ``Enhancer``/``PairLIEModule`` where they take it; ``{}`` for today's exact path."""
    if "conv" in inspect.signature(cls).parameters:
        return {"conv": conv}
    if conv == "direct":
        return {}
    raise Unavailable(f"{cls.__name__}(conv={conv!r}): {WINOGRAD_MISSING}")


@cache
def train_config_has_conv() -> bool:
    """Whether pairlie-train's composed config has the key ``model.conv``."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="pairlie.configs", version_base="1.3"):
        return "conv" in compose(config_name="train").model


def conv_overrides(conv: str) -> list[str]:
    """The pairlie-train override selecting ``conv``; none for "direct" where the key does not exist yet."""
    if train_config_has_conv():
        return [f"model.conv={conv}"]
    if conv == "direct":
        return []
    raise Unavailable(f"pairlie-train model.conv={conv}: {WINOGRAD_MISSING}")


def pairlie_train() -> str:
    """The pairlie-train console script of the Python running this script (its venv's)."""
    script = Path(sys.executable).parent / "pairlie-train"
    if not script.is_file():
        raise SystemExit(f"error: no pairlie-train beside {sys.executable}; run this with the venv's python")
    return str(script)


def run_logged(command: list[str], folder: Path, name: str) -> float:
    """Run ``command`` in ``folder`` with its output in ``folder/<name>.log``; wall seconds, start-up included.

    A failed run stops the script with the command and the log's tail.
    """
    log = folder / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"error: exit status {code} from\n  {' '.join(command)}\n{tail}")
    return seconds
