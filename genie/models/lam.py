"""The latent action model (LAM): learns a tiny vocabulary of actions from unlabeled video.

Encoder: a transformer over the pixel patches of one frame difference x[t+1] - x[t] (and, with `encoder_input:
diff+frame`, frame t+1) plus one learned action token; each transition is encoded alone, so the latent of
transition t -> t+1 depends on frames t and t+1 only, and a video of any length is encoded in chunks
(`encode_video`). The latent is quantised to `num_actions` codes.
Decoder: an ST-transformer over frames 1..t (causal in time; `decoder_context: frame`: frame t alone) with
the code of transition t added to every token of frame t; it predicts frame t+1, which it can only learn
about through the code.

Two choices keep the codes tied to actions rather than to anything else that changes (docs/lam.md
has the measurements):
- The encoder reads differences, not frames. With whole frames it mixed each episode's background
  into the latent and the codes meant different actions in different episodes (NMI 0.07-0.37).
  `encoder_input: diff+frame` adds frame t+1 back, for games where the difference alone may hide the action
  (tried on CoinRun: no better, docs/coinrun.md).
- The decoder predicts the change from frame t (its output layer starts at zero: the untrained model copies
  frame t), so the loss is spent on what moved, and the code is what explains the moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from genie.models.blocks import PatchEmbed, STConfig, STTransformer, unpatchify
from genie.models.checkpoint import load_stage_model
from genie.models.quantize import VectorQuantizer
from genie.models.resolution import Resolution, canonical_resolution, patch_grid


class LAMEncoding(NamedTuple):
    """What `LatentActionModel.encode` returns for a clip of T frames (float32 unless noted)."""

    z_q: torch.Tensor
    """(B, T-1, code_dim) the quantised latent action of each transition"""
    ids: torch.Tensor
    """(B, T-1) int64 its code"""
    vq_loss: torch.Tensor
    """() the VQ codebook + commitment loss"""
    z: torch.Tensor
    """(B, T-1, code_dim) the continuous latent before quantisation"""


@dataclass
class LAMConfig:
    """model: the latent action model"""

    resolution: Resolution = 64
    """int (square) or (H, W); set from data.resolution by the run config"""
    patch: int = 8
    """patch side in pixels"""
    max_frames: int = 16
    """the clip length the LAM sees (= data.seq_len of its training run, set from it)"""
    dim: int = 256
    """transformer width"""
    enc_depth: int = 4
    """encoder ST-transformer blocks"""
    dec_depth: int = 4
    """decoder ST-transformer blocks"""
    num_heads: int = 4
    """attention heads"""
    mlp_ratio: float = 4.0
    """MLP hidden width / dim"""
    dropout: float = 0.0
    """dropout in the transformer blocks"""
    num_actions: int = 8
    """latent actions: the size of the action codebook"""
    code_dim: int = 32
    """dimension of an action code"""
    vq_beta: float = 0.25
    """commitment weight of the VQ loss (beta of van den Oord et al. 2017, eq. 3)"""
    encoder_input: str = "diff"
    """what the encoder reads of each transition t -> t+1: "diff" (x[t+1] - x[t], 3 channels a pixel) or
    "diff+frame" (the difference and frame t+1, 6 channels: what an inverse-dynamics model sees, for games where
    the same key moves things differently by where the player stands, e.g. on the ground or in the air)"""
    decoder_context: str = "history"
    """what the decoder sees besides the code when it predicts frame t+1: "history" (frames 1..t, causal in time)
    or "frame" (frame t alone, every transition of a clip decoded on its own). With history the decoder can
    guess a held action's direction from the motion so far, and the codes came to name an axis, not a
    direction (issue 23); with frame t alone the direction has to come from the code"""

    def __post_init__(self):
        self.resolution = canonical_resolution(self.resolution, "LAM resolution")
        if self.encoder_input not in ("diff", "diff+frame"):
            raise ValueError(f"encoder_input must be 'diff' or 'diff+frame', got {self.encoder_input!r}")
        if self.decoder_context not in ("history", "frame"):
            raise ValueError(f"decoder_context must be 'history' or 'frame', got {self.decoder_context!r}")


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.cfg = cfg
        # (h, w) patches per frame; ValueError when the patch does not divide both sides
        self.grid_size = patch_grid(cfg.resolution, cfg.patch)

        def st(depth: int) -> STTransformer:
            return STTransformer(STConfig(cfg.dim, depth, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, causal_time=True))

        # one time position shared by all frames (max_frames=1 broadcasts): with a position per frame the
        # codes came to mean different actions early and late in a clip
        channels = 3 if cfg.encoder_input == "diff" else 6
        self.enc_embed = PatchEmbed(cfg.patch, channels, cfg.dim, cfg.resolution, max_frames=1)
        self.action_token = nn.Parameter(torch.randn(1, 1, 1, cfg.dim) * 0.02)
        self.encoder = st(cfg.enc_depth)
        self.to_code = nn.Linear(cfg.dim, cfg.code_dim)
        # standardise each latent feature over the batch before the cosine lookup: a fresh encoder gives
        # nearly the same latent for every transition, and without this all of them picked one code for
        # the first 100+ steps and training settled on 2-3 codes (docs/lam.md)
        self.code_norm = nn.BatchNorm1d(cfg.code_dim, affine=False)
        # with 8 codes each live code gets ~1/8 of a batch: a short usage memory (0.9) finds a dead
        # one within tens of steps, so early collapse to one code is undone in short runs too
        self.vq = VectorQuantizer(cfg.num_actions, cfg.code_dim, beta=cfg.vq_beta, usage_decay=0.9)

        self.dec_embed = PatchEmbed(cfg.patch, 3, cfg.dim, cfg.resolution, cfg.max_frames)
        self.from_code = nn.Linear(cfg.code_dim, cfg.dim)
        self.decoder = st(cfg.dec_depth)
        self.to_pixels = nn.Linear(cfg.dim, cfg.patch * cfg.patch * 3)
        nn.init.zeros_(self.to_pixels.weight)  # start as "copy frame t"
        nn.init.zeros_(self.to_pixels.bias)

    def _check_length(self, frames: int) -> None:
        if frames > self.cfg.max_frames:
            raise ValueError(
                f"the LAM sees at most {self.cfg.max_frames} frames at once, got {frames} "
                f"(LatentActionModel.encode_video encodes longer videos)"
            )

    def encode(self, video: torch.Tensor) -> LAMEncoding:
        """video (B, T, 3, H, W) in [0, 1] -> LAMEncoding(z_q (B, T-1, code_dim), ids (B, T-1), VQ loss,
        continuous z (B, T-1, code_dim))."""
        b, t = video.shape[:2]
        self._check_length(t)
        enc_in = video[:, 1:] - video[:, :-1]  # (B, T-1, 3, H, W): the differences
        if self.cfg.encoder_input == "diff+frame":
            enc_in = torch.cat([enc_in, video[:, 1:]], dim=2)  # (B, T-1, 6, H, W)
        if self.training:
            enc_in = shift_within_patch(enc_in, self.cfg.patch)
        patches = self.enc_embed(enc_in)  # (B, T-1, S, D)
        token = self.action_token.expand(b, t - 1, -1, -1)  # (B, T-1, 1, D)
        # each transition alone: an encoder that saw earlier transitions coded actions relative to them
        x = self.encoder(
            rearrange(torch.cat([token, patches], dim=2), "b t s d -> (b t) 1 s d")
        )  # (B*(T-1), 1, 1+S, D)
        z = self.code_norm(
            self.to_code(x[:, 0, 0])
        )  # (B*(T-1), code_dim): the latent of transition t sees frames t, t+1
        z = rearrange(z, "(b t) d -> b t d", b=b)
        z_q, ids, vq_loss = self.vq(z)
        return LAMEncoding(z_q, ids, vq_loss, z)

    def decode(self, past: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        """past frames 1..T-1 (B, T-1, 3, H, W) and codes (B, T-1, code_dim) -> predicted frames 2..T
        (B, T-1, 3, H, W)."""
        self._check_length(past.shape[1])
        b = past.shape[0]
        if self.cfg.decoder_context == "frame":  # each transition alone: frame t and its code
            past, z_q = rearrange(past, "b t c h w -> (b t) 1 c h w"), rearrange(z_q, "b t d -> (b t) 1 d")
        x = self.dec_embed(past) + rearrange(self.from_code(z_q), "b t d -> b t 1 d")  # (B, T-1, S, D)
        delta = unpatchify(self.to_pixels(self.decoder(x)), self.cfg.patch, self.grid_size)
        return rearrange(past + delta, "(b t) n c h w -> b (t n) c h w", b=b)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """video (B, T, 3, H, W) -> (predicted frames 2..T, ids (B, T-1), VQ loss)."""
        z_q, ids, vq_loss = self.encode(video)[:3]
        return self.decode(video[:, :-1], z_q), ids, vq_loss

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent actions of every transition of float video (B, T, 3, H, W) in [0, 1] of any length T >= 2:
        (ids (B, T-1) int64, continuous latents z (B, T-1, code_dim) float32), on the video's device.

        The encoder sees each transition alone (frames t and t+1), so the video is cut into windows of
        `max_frames` that share their boundary frame, run `batch_size` windows at a time; the codes equal one
        pass over the whole video. Raises ValueError for fewer than 2 frames.
        """
        b, t = video.shape[:2]
        if t < 2:
            raise ValueError(f"a video needs at least 2 frames for one action, got {t}")
        step = self.cfg.max_frames - 1  # transitions a window holds
        full = (t - 1) // step
        ids, latents = [], []
        if full:
            windows = video[:, : full * step + 1].unfold(1, step + 1, step)  # (B, full, 3, H, W, step+1)
            windows = rearrange(windows, "b n c h w t -> (b n) t c h w")
            for chunk in windows.split(batch_size):
                enc = self.encode(chunk)
                ids.append(enc.ids.long())
                latents.append(enc.z.float())
            ids = [rearrange(torch.cat(ids), "(b n) t -> b (n t)", b=b)]
            latents = [rearrange(torch.cat(latents), "(b n) t d -> b (n t) d", b=b)]
        if full * step < t - 1:  # the frames after the last whole window, with its last frame
            enc = self.encode(video[:, full * step :])
            ids.append(enc.ids.long())
            latents.append(enc.z.float())
        return torch.cat(ids, 1), torch.cat(latents, 1)

    @torch.no_grad()
    def infer_actions(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) in [0, 1], any T >= 2 -> latent action ids (B, T-1), int64 (`encode_video`)."""
        return self.encode_video(video)[0]


def shift_within_patch(video: torch.Tensor, patch: int) -> torch.Tensor:
    """Roll each clip (B, T, C, H, W) by a random offset of 0..patch-1 pixels on both axes.

    Without it a patch embedding sees a 2-pixel move differently at each offset within the patch grid,
    and the codes came to mean (action, offset) pairs: a held action alternated between two codes.
    """
    b, t, c, h, w = video.shape
    # drawn on the CPU generator (as the tests' seeds expect), used as tensors: no per-clip Python values,
    # so torch.compile does not specialise (and recompile) on them
    shifts = torch.randint(0, patch, (b, 2)).to(video.device)
    rows = (torch.arange(h, device=video.device)[None] - shifts[:, :1]) % h  # (B, H): torch.roll's source rows
    cols = (torch.arange(w, device=video.device)[None] - shifts[:, 1:]) % w  # (B, W)
    video = video.gather(-2, rows[:, None, None, :, None].expand(b, t, c, h, w))
    return video.gather(-1, cols[:, None, None, None, :].expand(b, t, c, h, w))


def load_lam(path: str | Path) -> LatentActionModel:
    """A trained LAM in eval mode on the CPU, from a stage-"lam" .ckpt, its run folder, or a world-model bundle."""
    return load_stage_model(path, "lam", LAMConfig, LatentActionModel, label="LAM")
