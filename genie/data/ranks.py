"""This process's place in a multi-process launch, read from the environment: the one place genie reads
LOCAL_RANK, SLURM_LOCALID, RANK, NODE_RANK and SLURM_PROCID.

Read before Lightning's Trainer exists (folder clean-up, cache builds, the device a cache is built on), so
from the variables the launchers set rather than from `trainer.global_rank`.
"""

from __future__ import annotations

import os


def local_rank() -> int:
    """This process's rank on its node: LOCAL_RANK (Lightning's launcher, torchrun) or SLURM_LOCALID (srun); 0
    when neither is set. Raises ValueError when the variable is not an integer."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))


def is_launch_rank_zero() -> bool:
    """True in the process that started the run: a multi-process launch (Lightning's own, which re-runs the
    command for ranks >= 1, or torchrun) sets RANK or LOCAL_RANK/NODE_RANK in the other processes; srun
    starts every rank itself and sets only SLURM_PROCID. Raises ValueError when a variable is not an integer."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    if "LOCAL_RANK" in os.environ or "NODE_RANK" in os.environ:
        return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    return int(os.environ.get("SLURM_PROCID", "0")) == 0
