"""OmegaConf resolvers the configs use: where a run starts, which job it belongs to, which rank writes.

Registered when `pairlie` is imported, which Hydra does before it reads ``pkg://pairlie.configs``.
Unlike ``${hydra:runtime.cwd}`` they resolve before Hydra has set its runtime config, which a
multirun's ``hydra.sweep.dir`` needs.
"""

from __future__ import annotations

import os
from datetime import datetime

from omegaconf import OmegaConf


def cwd() -> str:
    """The folder the command was started in."""
    return os.getcwd()


def first(*values):
    """The first value that is not null: ``${pairlie.first:${data.gamma},0.2}``."""
    return next((v for v in values if v is not None), None)


def job_id() -> str | None:
    """The cluster job this process belongs to: ``slurm-<id>`` or ``torchrun-<id>``; None outside a job.

    Every rank of a job (and a requeued SLURM job) shares it, so all of them use one run folder.
    """
    slurm = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID")
    if slurm:
        return f"slurm-{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return f"torchrun-{elastic}"
    return None


def run_name(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """A run folder's name: the cluster job's id where there is one, else the start time."""
    return job_id() or datetime.now().strftime(pattern)


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def rank_zero(value):
    """``value`` in the process of global rank 0, null in the others (e.g. ``hydra.output_subdir``)."""
    return value if global_rank() == 0 else None


def num_nodes() -> int:
    """Nodes of this job: SLURM's count, torchrun's, else ``PAIRLIE_SLURM_NODES`` (the launcher preset's), else 1."""
    for var in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    world, local = os.environ.get("WORLD_SIZE", ""), os.environ.get("LOCAL_WORLD_SIZE", "")
    if world.isdigit() and local.isdigit() and int(local) > 0:
        return max(1, int(world) // int(local))
    nodes = os.environ.get("PAIRLIE_SLURM_NODES", "")
    return int(nodes) if nodes.isdigit() else 1


def register() -> None:
    for name, fn, cache in (
        ("pairlie.cwd", cwd, True),
        ("pairlie.first", first, False),
        ("pairlie.run_name", run_name, True),
        ("pairlie.rank_zero", rank_zero, False),
        ("pairlie.num_nodes", num_nodes, False),
    ):
        OmegaConf.register_new_resolver(name, fn, use_cache=cache, replace=True)
