"""Whole processes, as scripts/benchmark.py and scripts/learning_curve.py time them: pairlie-train as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


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
