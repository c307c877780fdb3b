"""The video tokenizer: an ST-ViViT VQ-VAE that turns frames into a grid of discrete ids per frame.

Patches -> causal ST-transformer encoder -> vector quantiser -> causal ST-transformer decoder -> patches.
Temporal attention is causal in both halves, so the ids of frame t depend only on frames <= t and the
reconstruction of frame t only on the ids of frames <= t: the dynamics model can generate frame by
frame and decode each new frame without waiting for the future.

Clips longer than `max_frames` are handled with a sliding window: the first `max_frames` frames in one
pass, then each later frame as the last frame of the window that ends at it. Training clips start
anywhere in a video, so a frame at window position k with k frames of context is exactly what the
model saw in training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genie.models.blocks import PatchEmbed, STConfig, STTransformer, frames_to_keep, unpatchify
from genie.models.checkpoint import load_stage_model
from genie.models.quantize import VectorQuantizer
from genie.models.resolution import Resolution, canonical_resolution, frame_size, grid_value, patch_grid


@dataclass
class TokenizerConfig:
    """model: the video tokenizer (ST-ViViT VQ-VAE)"""

    resolution: Resolution = 64
    """frames are resolution x resolution, or (H, W) (set from data.resolution when training)"""
    patch: int = 4
    """patch side in pixels: one token per patch x patch square of a frame"""
    max_frames: int = 16
    """longest clip processed in one pass (temporal positions; at least data.seq_len when training)"""
    dim: int = 256
    """transformer width"""
    enc_depth: int = 4
    """encoder ST-transformer blocks; 0 makes the encoder per-patch (a linear map of each patch's pixels, no
    positions), so a patch whose pixels do not change keeps its token id from frame to frame: the tokens a dynamics
    model has to copy stay copyable (docs/results.md, issue 13)"""
    dec_depth: int = 4
    """decoder ST-transformer blocks"""
    num_heads: int = 4
    """attention heads"""
    mlp_ratio: float = 4.0
    """MLP hidden width / dim"""
    dropout: float = 0.0
    """dropout in the transformer blocks"""
    num_codes: int = 1024
    """codebook size: the token vocabulary"""
    code_dim: int = 32
    """dimension of a codebook vector"""
    vq_beta: float = 0.25
    """commitment weight of the VQ loss (beta of van den Oord et al. 2017, eq. 3)"""
    restart_every: int = 50
    """steps between dead-code restarts (0 = never)"""
    usage_decay: float = 0.9
    """decay of the code-usage average: a fast average lets the first restart (step `restart_every`) revive the
    codes that the freshly initialised encoder never picks; with 0.99 nothing counts as dead before step ~350"""

    def __post_init__(self):
        self.resolution = canonical_resolution(self.resolution, "tokenizer resolution")


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        # (h, w) tokens per frame; ValueError when the patch does not divide both sides
        self.grid_size = patch_grid(cfg.resolution, cfg.patch)
        self.grid = grid_value(self.grid_size)  # h when square, else (h, w): the form DynamicsConfig.grid takes
        self.num_codes = cfg.num_codes

        def st(depth: int) -> STConfig:
            return STConfig(
                dim=cfg.dim,
                depth=depth,
                num_heads=cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                dropout=cfg.dropout,
                causal_time=True,
            )

        # without encoder blocks the positions could only make equal patches at different places or times take
        # different ids (measured: 10 % of unchanged patches changed id between frames with them, flat backgrounds)
        self.patch_embed = PatchEmbed(
            cfg.patch, 3, cfg.dim, cfg.resolution, cfg.max_frames, positions=cfg.enc_depth > 0
        )
        self.encoder = STTransformer(st(cfg.enc_depth))
        self.to_code = nn.Linear(cfg.dim, cfg.code_dim)
        self.vq = VectorQuantizer(
            cfg.num_codes, cfg.code_dim, beta=cfg.vq_beta, usage_decay=cfg.usage_decay, restart_every=cfg.restart_every
        )
        self.from_code = nn.Linear(cfg.code_dim, cfg.dim)
        # the decoder gets its own positions: a code id says what a patch looks like, not where it is
        self.dec_pos_space = nn.Parameter(torch.randn(1, 1, self.grid_size[0] * self.grid_size[1], cfg.dim) * 0.02)
        self.dec_pos_time = nn.Parameter(torch.randn(1, cfg.max_frames, 1, cfg.dim) * 0.02)
        self.decoder = STTransformer(st(cfg.dec_depth))
        self.to_pixels = nn.Linear(cfg.dim, cfg.patch * cfg.patch * 3)
        self._compiled_decode = None  # set by compile_decoding()

    def num_params(self) -> int:
        """The number of parameters (trainable or not)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------ one window

    def _encode_window(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """video (B, T<=max_frames, 3, H, W) -> (quantised latents (B, T, S, code_dim), ids (B, T, S), VQ loss)."""
        z = self.to_code(self.encoder(self.patch_embed(video)))
        return self.vq(z)

    def _decoder_input(self, latents: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """Quantised latents (B, T, S, code_dim) of the frames at time positions t0.. -> decoder tokens (B, T, S, D)."""
        return self.from_code(latents) + self.dec_pos_space + self.dec_pos_time[:, t0 : t0 + latents.shape[1]]

    def _to_video(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, T, S, D) -> video (B, T, 3, H, W), unclamped."""
        return unpatchify(self.to_pixels(h), self.cfg.patch, self.grid_size)

    def _decode_window(self, latents: torch.Tensor) -> torch.Tensor:
        """Quantised latents (B, T<=max_frames, S, code_dim) -> video (B, T, 3, H, W), unclamped."""
        return self._to_video(self.decoder(self._decoder_input(latents)))

    def _sliding(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Apply the causal per-window `fn` along time (axis 1) to any number of frames."""
        m = self.cfg.max_frames
        outs = [fn(x[:, :m])]
        outs += [fn(x[:, t - m + 1 : t + 1])[:, -1:] for t in range(m, x.shape[1])]
        return torch.cat(outs, dim=1)

    # ---------------------------------------------------------------------------------- public

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """video (B, T<=max_frames, 3, H, W) in [0, 1] -> (reconstruction in [0, 1], ids (B, T, h, w), VQ loss)."""
        self._check(video)
        latents, ids, vq_loss = self._encode_window(video)
        recon = self._decode_window(latents)
        # clamp the values but pass gradients straight through, so an overshooting pixel is still pulled back
        recon = recon + (recon.clamp(0, 1) - recon).detach()
        return recon, ids.unflatten(-1, self.grid_size), vq_loss

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, 3, H, W) float in [0, 1] -> ids (B, T, h, w) long."""
        self._check(video, any_length=True)
        ids = self._sliding(video, lambda v: self._encode_window(v)[1])  # (B, T, S)
        return ids.unflatten(-1, self.grid_size)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T, h, w) -> video (B, T, 3, H, W) float in [0, 1]."""
        latents = self.vq.lookup(ids.flatten(-2))  # (B, T, S, code_dim)
        return self._sliding(latents, self._decode_window).clamp(0, 1)

    def decode_pass(self, x: torch.Tensor, cache: list | None) -> tuple[torch.Tensor, list]:
        """One new frame's decoder tokens x (B, 1, S, D) against the past frames' decoder cache -> (float video
        (B, 1, 3, H, W) unclamped, the frame's per-block kv). The per-frame work of DecodeStream; `compile_decoding`
        compiles it."""
        h, new_kv = self.decoder.step(x, cache)
        return self._to_video(h).float(), new_kv

    def compile_decoding(self, mode: str | None = None) -> None:
        """torch.compile `decode_pass` (default mode: CUDA graphs on a GPU); see DynamicsModel.compile_sampling."""
        if mode is None:
            mode = "reduce-overhead" if next(self.parameters()).is_cuda else "default"
        self._compiled_decode = torch.compile(self.decode_pass, mode=mode, dynamic=None)

    def _check(self, video: torch.Tensor, any_length: bool = False) -> None:
        h, w = frame_size(self.cfg.resolution)
        if video.ndim != 5 or video.shape[2] != 3 or video.shape[-2:] != (h, w):
            raise ValueError(f"expected video (B, T, 3, {h}, {w}), got {tuple(video.shape)}")
        if not any_length and video.shape[1] > self.cfg.max_frames:
            raise ValueError(f"clip of {video.shape[1]} frames is longer than max_frames={self.cfg.max_frames}")


class DecodeStream:
    """Decode a generated video one frame at a time, as it is played.

    The decoder is causal in time, so the decoder's temporal keys/values of the past frames are kept and
    each new frame costs one frame of decoder work, where decoding the whole context window again would
    cost up to max_frames frames (for the CoinRun model, more than the dynamics model's 8 MaskGIT passes).
    When the window is full, the oldest `slide` frames are dropped and the rest re-encoded from time
    position 0, as RolloutState does for the dynamics model: every frame comes out as
    `VideoTokenizer.decode` gives the newest frame of the stream's window, which is the dynamics context
    when the window and slide are the dynamics model's (WorldModel's choice).
    """

    @torch.no_grad()
    def __init__(self, tokenizer: VideoTokenizer, ids: torch.Tensor, slide: int = 1, window: int | None = None):
        """ids (B, T>=1, h, w): the frames so far; `frame` is then the newest one decoded, float (B, 3, H, W) in [0, 1].
        `window`: at most the tokenizer's max_frames (the default); `slide` is kept below it."""
        if ids.ndim != 4 or ids.shape[1] < 1:
            raise ValueError(f"expected ids (B, T>=1, h, w), got {tuple(ids.shape)}")
        self.tokenizer = tokenizer
        self.window = min(window or tokenizer.cfg.max_frames, tokenizer.cfg.max_frames)
        self.slide = min(max(1, slide), max(1, self.window - 1))  # a window of 1 frame keeps no past frame
        self.ids = ids[:, -self.window :].flatten(-2)  # (B, T, S)
        self.frame = tokenizer._to_video(self._prefill()[:, -1:])[:, 0].float().clamp(0, 1)

    def _prefill(self) -> torch.Tensor:
        """Fill the cache from the frames in `self.ids`; returns the decoder output of those frames."""
        tok = self.tokenizer
        h, self.cache = tok.decoder.prefill(tok._decoder_input(tok.vq.lookup(self.ids)))
        return h

    @torch.no_grad()
    def push(self, ids: torch.Tensor) -> torch.Tensor:
        """The next frame's ids (B, h, w) -> that frame decoded, float (B, 3, H, W) in [0, 1]."""
        tok = self.tokenizer
        keep = frames_to_keep(self.ids.shape[1], self.window, self.slide)
        if keep < self.ids.shape[1]:  # the window is full: drop the oldest `slide` frames, re-encode the rest
            self.ids = self.ids[:, self.ids.shape[1] - keep :]
            if keep:
                self._prefill()
            else:
                self.cache = None
        ids = ids.flatten(-2)[:, None]  # (B, 1, S)
        x = tok._decoder_input(tok.vq.lookup(ids), t0=self.ids.shape[1])
        video, new_kv = (tok._compiled_decode or tok.decode_pass)(x, self.cache)
        if tok._compiled_decode is not None:
            # a CUDA-graph replay reuses its output memory: keep copies of what outlives this call
            video, new_kv = video.clone(), [(k.clone(), v.clone()) for k, v in new_kv]
        self.cache = STTransformer.extend(self.cache, new_kv)
        self.ids = torch.cat([self.ids, ids], dim=1)
        self.frame = video[:, 0].clamp(0, 1)
        return self.frame


def load_tokenizer(path: str | Path) -> VideoTokenizer:
    """A trained tokenizer, in eval mode on the CPU, from a tokenizer checkpoint (.ckpt), a tokenizer run
    folder (its checkpoints/last.ckpt) or a world-model bundle."""
    return load_stage_model(path, "tokenizer", TokenizerConfig, VideoTokenizer)
