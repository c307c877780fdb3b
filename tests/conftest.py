"""Shared fixtures: a small sprite-world dataset, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# tests run on shared CPUs: one thread keeps them predictable and leaves the other cores free
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sprite_data(tmp_path_factory) -> Path:
    """A folder of 12 sprite-world episodes (32x32, 48 frames, with action sidecars)."""
    from genie import sprites

    out = tmp_path_factory.mktemp("sprites")
    sprites.generate(out, episodes=12, seed=0, progress=False)
    return out
