"""Shared fixtures: small sprite-world datasets, written once per test session, and the one trained pipeline run
(tokenizer, LAM, dynamics, bundle) that tests/test_pipeline.py and tests/test_lam.py share.

Tests that need a trained pipeline are marked `slow`: `make test-fast` (pytest -m "not slow") skips them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# tests run on shared CPUs: one thread keeps them predictable and leaves the other cores free
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
GENIE_YAML = ROOT / "configs" / "sprites" / "genie.yaml"
LAM_YAML = ROOT / "configs" / "sprites" / "lam.yaml"  # the LAM stage config genie.yaml names
# the pipeline run's overrides: small enough for a CPU test run, big enough that the actions really control the
# world; a `<stage>.` prefix reaches that stage only, the others reach every stage
PIPELINE_OVERRIDES = [
    "tokenizer.train.max_steps=300",
    "tokenizer.train.val_every_steps=300",
    "tokenizer.model.dim=64",
    "lam.train.max_steps=400",
    "lam.train.val_every_steps=400",
    "dynamics.train.max_steps=800",
    "dynamics.train.val_every_steps=800",
    "data.num_workers=0",
    "data.max_val_clips=32",
]


@pytest.fixture(scope="session")
def sprite_data(tmp_path_factory) -> Path:
    """A folder of 12 sprite-world episodes (32x32, 48 frames, with action sidecars)."""
    from genie.data import sprites

    out = tmp_path_factory.mktemp("sprites")
    sprites.generate(out, episodes=12, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def pipeline_data(tmp_path_factory) -> Path:
    """64 sprite episodes, as `make demo` trains on (16 were learned by heart: docs/results.md)."""
    from genie.data import sprites

    out = tmp_path_factory.mktemp("sprites64")
    sprites.generate(out, episodes=64, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def train_all_args(pipeline_data, tmp_path_factory) -> list[str]:
    """`genie train all` arguments of the shared pipeline run (its run folder: `bundle.parent`)."""
    where = ["--data", str(pipeline_data), "--run-dir", str(tmp_path_factory.mktemp("genie_run"))]
    return ["train", "all", "--config", str(GENIE_YAML), *where, *PIPELINE_OVERRIDES]


def stage_overrides(stage: str) -> list[str]:
    """The pipeline overrides that reach one stage, as `genie train <stage>` takes them."""
    others = tuple(f"{s}." for s in ("tokenizer", "lam", "dynamics") if s != stage)
    return [o.removeprefix(f"{stage}.") for o in PIPELINE_OVERRIDES if not o.startswith(others)]


@pytest.fixture(scope="session")
def pipeline_lam(train_all_args, pipeline_data) -> Path:
    """The pipeline run's LAM folder (400 steps on the 64 episodes, 6 held out; about 5 minutes), trained first
    on its own: the LAM tests need not wait for the tokenizer and dynamics stages, and `train all` finds it
    finished."""
    from genie.cli import main

    run_dir = Path(train_all_args[train_all_args.index("--run-dir") + 1]) / "lam"
    where = ["--data", str(pipeline_data), "--run-dir", str(run_dir)]
    assert main(["train", "lam", "--config", str(LAM_YAML), *where, *stage_overrides("lam")]) == 0
    return run_dir


@pytest.fixture(scope="session")
def bundle(train_all_args, pipeline_lam) -> Path:
    """The world-model bundle of the shared pipeline run (the tokenizer and dynamics stages after the LAM: about
    13 minutes on a 2-core CPU)."""
    from genie.cli import main

    lam_checkpoint = pipeline_lam / "checkpoints" / "last.ckpt"
    before = lam_checkpoint.stat().st_mtime_ns
    assert main(train_all_args) == 0
    # train all skipped the finished LAM stage (a different LAM model config would have been refused): the LAM
    # the LAM tests check is the bundle's
    assert lam_checkpoint.stat().st_mtime_ns == before
    return pipeline_lam.parent / "world_model.pt"
