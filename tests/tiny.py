"""Tiny untrained models for tests: random weights, real code paths, a fraction of a second each on a CPU.

One constructor per model, shared by the test files (`from tiny import tiny_tokenizer, ...`); the keyword
arguments are the config fields a test varies, anything else goes to the config as given. The defaults are the
32x32 tokenizer (8x8 tokens, 64 codes) and LAM (8 actions) and the dynamics model over their ids that most tests
use; `tiny_world` is a 16x16 world with 4 latent actions.
"""

from __future__ import annotations

import numpy as np

from genie.models.dynamics import DynamicsConfig, DynamicsModel
from genie.models.lam import LAMConfig, LatentActionModel
from genie.models.tokenizer import TokenizerConfig, VideoTokenizer
from genie.models.world import WorldModel

# the width and depth of every tiny tokenizer and LAM
SMALL = dict(dim=32, enc_depth=1, dec_depth=1, num_heads=2, code_dim=8)


def tokenizer_config(resolution=32, patch: int = 4, max_frames: int = 8, num_codes: int = 64, **fields):
    """A tiny TokenizerConfig: SMALL, updated by `fields`."""
    return TokenizerConfig(
        resolution=resolution, patch=patch, max_frames=max_frames, num_codes=num_codes, **{**SMALL, **fields}
    )


def tiny_tokenizer(resolution=32, patch: int = 4, max_frames: int = 8, num_codes: int = 64, **fields) -> VideoTokenizer:
    """An untrained tiny tokenizer (in training mode, as constructed)."""
    return VideoTokenizer(tokenizer_config(resolution, patch, max_frames, num_codes, **fields))


def tiny_lam(resolution=32, patch: int = 8, max_frames: int = 8, num_actions: int = 8, **fields) -> LatentActionModel:
    """An untrained tiny LAM (in training mode, as constructed)."""
    config = LAMConfig(
        resolution=resolution, patch=patch, max_frames=max_frames, num_actions=num_actions, **{**SMALL, **fields}
    )
    return LatentActionModel(config)


def tiny_dynamics(num_codes: int = 64, grid=8, num_actions: int = 8, max_frames: int = 4, **fields) -> DynamicsModel:
    """An untrained tiny dynamics model (dim 32, one block, two heads unless `fields` say otherwise)."""
    config = DynamicsConfig(
        num_codes=num_codes,
        grid=grid,
        num_actions=num_actions,
        max_frames=max_frames,
        **{"dim": 32, "depth": 1, "num_heads": 2, **fields},
    )
    return DynamicsModel(config)


def tiny_models(resolution=16, patch: int = 4, max_frames: int = 4, tokenizer_frames: int | None = None, **tokenizer):
    """(tokenizer, LAM, dynamics) of one tiny world: 16 codes, 4 latent actions, the dynamics model over the
    tokenizer's grid; `tokenizer_frames` gives the tokenizer another window, `tokenizer` other tokenizer fields."""
    tok = tiny_tokenizer(resolution, patch, tokenizer_frames or max_frames, num_codes=16, **tokenizer)
    lam = tiny_lam(resolution, patch, max_frames, num_actions=4)
    return tok, lam, tiny_dynamics(num_codes=16, grid=tok.grid, num_actions=4, max_frames=max_frames)


def tiny_world(prompt: np.ndarray | None = None, fit: str | None = None, **models) -> WorldModel:
    """An untrained tiny world (`tiny_models(**models)`), with `prompt` as its sample prompt."""
    return WorldModel(*tiny_models(**models), prompt=prompt, **({"fit": fit} if fit else {}))
