"""Autoregressive generation with the dynamics model: MaskGIT-decode one frame at a time, causal in time,
with a cache of the past frames' keys/values so each new frame costs one frame of transformer work.

When the context outgrows the model's `max_frames`, the oldest frames are dropped and the cache is
rebuilt from the remaining window (positions are absolute, so the window is re-encoded). `slide` sets
how many frames go at once: 1 keeps the longest context but re-encodes the window at every step once it
is full (about max_frames frames of work a step); dropping more re-encodes once every `slide` steps, for
a context that varies between max_frames - slide and max_frames - 1 frames.
"""

from __future__ import annotations

import torch

from genie.config import ConfigError
from genie.models.blocks import STTransformer, frames_to_keep
from genie.models.dynamics import DynamicsModel


def check_slide(slide: int, window: int) -> int:
    """`slide` if it is a number of frames a full context window of `window` frames can drop, else a ConfigError."""
    if not 1 <= slide < max(2, window):
        raise ConfigError(
            f"slide must be in 1..{max(1, window - 1)} for this model "
            f"(its context window is {window} frames), got {slide}"
        )
    return slide


@torch.no_grad()
def generate(
    dynamics: DynamicsModel,
    context_ids: torch.Tensor,
    context_actions: torch.Tensor,
    actions: torch.Tensor,
    steps: int | None = None,
    temperature: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate len(actions) new frames.

    context_ids (B, T0, S) with T0 >= 1; context_actions (B, T0-1) between the context frames;
    actions (B, N) the latent action taken before each new frame. Returns new ids (B, N, S).
    """
    state = RolloutState(dynamics, context_ids, context_actions)
    return torch.stack([state.step(actions[:, n], steps, temperature, generator) for n in range(actions.shape[1])], 1)


class RolloutState:
    """The growing context of one batched rollout: ids, actions and the dynamics model's kv cache."""

    def __init__(
        self, dynamics: DynamicsModel, context_ids: torch.Tensor, context_actions: torch.Tensor, slide: int = 1
    ):
        self.dynamics = dynamics
        self.window = dynamics.cfg.max_frames
        self.slide = check_slide(slide, self.window)
        self.ids = context_ids[:, -(self.window - 1) :]  # (B, T, S)
        self.actions = context_actions[:, context_actions.shape[1] - (self.ids.shape[1] - 1) :]  # (B, T-1)
        self.cache = dynamics.prefill(self.ids, self.actions)

    @torch.no_grad()
    def step(self, action: torch.Tensor, steps=None, temperature=None, generator=None) -> torch.Tensor:
        """Generate the next frame after `action` (B,); returns its ids (B, S) and keeps it in the context."""
        keep = frames_to_keep(self.ids.shape[1], self.window, self.slide)
        if keep < self.ids.shape[1]:
            # slide the window: keep the last window-slide frames (at least one) and re-encode them from position 0
            keep = max(1, keep)
            self.ids = self.ids[:, -keep:]
            self.actions = self.actions[:, self.actions.shape[1] - (keep - 1) :]
            self.cache = self.dynamics.prefill(self.ids, self.actions)
        t_index = self.ids.shape[1]
        new_ids, new_kv = self.dynamics.sample_next(
            self.cache, t_index, action, steps, temperature, generator, prev_ids=self.ids[:, -1]
        )
        self.cache = STTransformer.extend(self.cache, new_kv)
        self.ids = torch.cat([self.ids, new_ids[:, None]], dim=1)
        self.actions = torch.cat([self.actions, action[:, None]], dim=1)
        return new_ids


@torch.no_grad()
def rollout_video(
    tokenizer,
    dynamics: DynamicsModel,
    ids: torch.Tensor,
    actions: torch.Tensor,
    prompt_len: int = 1,
    steps: int | None = None,
    temperature: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replay a clip from its first `prompt_len` frames: ids (B, T, S), actions (B, T-1) -> float frames
    (B, T, 3, H, W).

    Frames after the prompt are generated with the given actions, then everything is decoded.
    """
    new = generate(
        dynamics,
        ids[:, :prompt_len],
        actions[:, : prompt_len - 1],
        actions[:, prompt_len - 1 :],
        steps,
        temperature,
        generator,
    )
    all_ids = torch.cat([ids[:, :prompt_len], new], dim=1)
    return tokenizer.decode(all_ids.view(*all_ids.shape[:2], *dynamics.grid_size)).clamp(0, 1)
