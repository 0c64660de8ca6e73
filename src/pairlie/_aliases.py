"""Dotted paths from before the sub-packages, kept working: in checkpoints, configs and code already written.

``pairlie.nets.PairLIENet`` (in every checkpoint ``pairlie-train`` wrote before) is
``pairlie.model.nets.PairLIENet``: importing an old path gives the module at its new home, the
same module object (a monkeypatch through either name reaches both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module -> its home now
MODULES = {
    "pairlie.files": "pairlie.io.files",
    "pairlie.images": "pairlie.io.images",
    "pairlie.speed": "pairlie.io.speed",
    "pairlie.nets": "pairlie.model.nets",
    "pairlie.losses": "pairlie.model.losses",
    "pairlie.checkpoints": "pairlie.model.checkpoints",
    "pairlie.weights": "pairlie.model.weights",
    "pairlie.inference": "pairlie.infer.enhancer",
    "pairlie.streaming": "pairlie.infer.streaming",
    "pairlie.structure": "pairlie.infer.structure",
    "pairlie.receptive": "pairlie.infer.receptive",
    "pairlie.precision": "pairlie.infer.precision",
    "pairlie.int8": "pairlie.infer.int8",
    "pairlie.winograd": "pairlie.infer.winograd",
    "pairlie.folders": "pairlie.infer.folders",
    "pairlie.metrics": "pairlie.evaluate.metrics",
    "pairlie.noref": "pairlie.evaluate.noref",
    "pairlie.collapse": "pairlie.evaluate.collapse",
    "pairlie.evaluation": "pairlie.evaluate.scoring",
    "pairlie.report": "pairlie.evaluate.report",
    "pairlie.module": "pairlie.train.module",
    "pairlie.callbacks": "pairlie.train.callbacks",
    "pairlie.runs": "pairlie.train.runs",
    "pairlie.sweep": "pairlie.train.sweep",
    "pairlie.hparams": "pairlie.train.hparams",
    "pairlie.resolvers": "pairlie.train.resolvers",
    "pairlie.export": "pairlie.deploy.export",
    "pairlie.cli.preflight": "pairlie.configuration",
}


def current(target: str) -> str:
    """``target`` (``module.Name`` or a module) with an old module path replaced by today's."""
    for old, new in MODULES.items():
        if target == old or target.startswith(old + "."):
            return new + target[len(old) :]
    return target


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module at its new home."""

    def find_spec(self, name, path=None, target=None):
        if name in MODULES:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MODULES[spec.name])

    def exec_module(self, module):
        pass  # already executed at its new home


def install() -> None:
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
