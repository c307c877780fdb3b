"""Spatiotemporal (ST) transformer blocks shared by the tokenizer, the LAM and the dynamics model.

Each block attends spatially within a frame, then causally in time at each spatial position, then
applies an MLP (Genie's memory-efficient ST-transformer). Attention goes through
`F.scaled_dot_product_attention`, so flash/efficient kernels are used where available. Temporal
attention can run incrementally: `step` processes one new frame against cached keys/values of the
past frames, so generating a frame costs one frame of compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genie.models.resolution import frame_size, patch_grid


@dataclass
class STConfig:
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    qk_norm: bool = True  # normalised queries/keys keep attention logits bounded (as Genie does)
    causal_time: bool = True


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout: timm's `Mlp` as the blocks used it, with its submodule
    names (fc1, fc2), so state dicts written with timm's load unchanged. Defined here because importing timm
    took 2.9 s of the 5.3 s `from genie import WorldModel` on a 2-core CPU (docs/layout.md)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim): fc1, activation, dropout, fc2, dropout."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of (N, L, D), with optional QK-norm."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, L, dim) -> q, k, v, each (N, heads, L, head_dim), q and k normalised."""
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.num_heads)
        return self.q_norm(q), self.k_norm(k), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        """Scaled dot-product attention of q (N, heads, Lq, d) over k, v (N, heads, Lk, d) (causal: query i sees
        keys 0..i), projected back to (N, Lq, dim)."""
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=p)
        return self.proj(rearrange(out, "n h l d -> n l (h d)"))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """Self-attention: x (N, L, dim) -> (N, L, dim)."""
        return self.attend(*self.qkv_heads(x), causal=causal)


class STBlock(nn.Module):
    def __init__(self, cfg: STConfig):
        super().__init__()
        self.causal_time = cfg.causal_time
        self.norm_space = nn.LayerNorm(cfg.dim)
        self.attn_space = Attention(cfg.dim, cfg.num_heads, cfg.qk_norm, cfg.dropout)
        self.norm_time = nn.LayerNorm(cfg.dim)
        self.attn_time = Attention(cfg.dim, cfg.num_heads, cfg.qk_norm, cfg.dropout)
        self.norm_mlp = nn.LayerNorm(cfg.dim)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.dropout)

    def _space(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = rearrange(self.norm_space(x), "b t s d -> (b t) s d")
        return x + rearrange(self.attn_space(h), "(b t) s d -> b t s d", b=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, S, D)
        """x (B, T, S, D) -> (B, T, S, D): attention over space (S) within each frame, then over time (T, causal when
        the block is) at each position, then the MLP, each residual."""
        b, t, s, _ = x.shape
        x = self._space(x)
        h = rearrange(self.norm_time(x), "b t s d -> (b s) t d")
        x = x + rearrange(self.attn_time(h, causal=self.causal_time), "(b s) t d -> b t s d", b=b)
        return x + self.mlp(self.norm_mlp(x))

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None):
        """One new frame x (B, 1, S, D) against cached temporal keys/values `past`, each (B*S, H, T_past, Dh).

        Returns the block output and this frame's own (k, v) so the caller can extend the cache.
        """
        b = x.shape[0]
        x = self._space(x)
        h = rearrange(self.norm_time(x), "b t s d -> (b s) t d")
        q, k, v = self.attn_time.qkv_heads(h)
        if past is not None:
            k_all, v_all = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        else:
            k_all, v_all = k, v
        # the new frame is the last one: it may attend to every cached frame, so no mask is needed
        x = x + rearrange(self.attn_time.attend(q, k_all, v_all, causal=False), "(b s) t d -> b t s d", b=b)
        return x + self.mlp(self.norm_mlp(x)), (k, v)

    def frame_kv(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Temporal keys/values of every frame of x (B, T, S, D) and the block output, for filling a cache."""
        b = x.shape[0]
        x_space = self._space(x)
        h = rearrange(self.norm_time(x_space), "b t s d -> (b s) t d")
        q, k, v = self.attn_time.qkv_heads(h)
        out = x_space + rearrange(self.attn_time.attend(q, k, v, causal=self.causal_time), "(b s) t d -> b t s d", b=b)
        return (k, v), out + self.mlp(self.norm_mlp(out))


class STTransformer(nn.Module):
    """A stack of ST blocks with a final LayerNorm. Input and output: (B, T, S, D)."""

    def __init__(self, cfg: STConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(STBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, S, D) -> (B, T, S, D): every block, then the final norm."""
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run all frames of x (B, T, S, D) and return (output, per-block temporal (k, v) cache)."""
        cache = []
        for block in self.blocks:
            kv, x = block.frame_kv(x)
            cache.append(kv)
        return self.norm(x), cache

    def step(self, x: torch.Tensor, cache: list | None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One new frame x (B, 1, S, D) given `cache` from `prefill`/`extend`; returns (output, new frame's kv)."""
        new_kv = []
        for i, block in enumerate(self.blocks):
            x, kv = block.step(x, cache[i] if cache else None)
            new_kv.append(kv)
        return self.norm(x), new_kv

    @staticmethod
    def extend(cache: list | None, new_kv: list, max_frames: int | None = None) -> list:
        """Append a frame's kv (from `step`) to the cache, keeping at most `max_frames` frames."""
        out = []
        for i, (k, v) in enumerate(new_kv):
            if cache:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
            if max_frames is not None:
                k, v = k[:, :, -max_frames:], v[:, :, -max_frames:]
            out.append((k, v))
        return out


def frames_to_keep(length: int, window: int, slide: int) -> int:
    """The sliding context window's arithmetic, shared by rollouts (genie.models.sampling.RolloutState) and
    streamed decoding (genie.models.tokenizer.DecodeStream): how many of the `length` newest context frames stay
    before one more frame is added. All of them while there is room (`length` < `window`); once the window is
    full, the oldest `slide` go and `window - slide` stay (re-encoded from time position 0 by the caller)."""
    return length if length < window else window - slide


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PatchEmbed(nn.Module):
    """Frames (B, T, C, H, W) -> patch tokens (B, T, h*w, D) with learned space and time positions.

    `resolution` is int (square) or (H, W); the patch must divide both sides (ValueError otherwise).
    `positions=False` leaves the positions out: each token is then a function of its patch's pixels alone."""

    def __init__(self, patch: int, in_channels: int, dim: int, resolution, max_frames: int, positions: bool = True):
        super().__init__()
        self.patch = patch
        self.grid_size = patch_grid(resolution, patch)  # (h, w) tokens per frame
        self.proj = nn.Linear(in_channels * patch * patch, dim)
        self.positions = positions
        if positions:
            self.pos_space = nn.Parameter(torch.randn(1, 1, self.grid_size[0] * self.grid_size[1], dim) * 0.02)
            self.pos_time = nn.Parameter(torch.randn(1, max_frames, 1, dim) * 0.02)

    def forward(self, video: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """float video (B, T, 3, H, W) -> tokens (B, T, (H/p)*(W/p), dim) with space and time position embeddings,
        time positions starting at `t0`."""
        x = rearrange(video, "b t c (h p) (w q) -> b t (h w) (p q c)", p=self.patch, q=self.patch)
        x = self.proj(x)
        if not self.positions:
            return x
        return x + self.pos_space + self.pos_time[:, t0 : t0 + x.shape[1]]


def unpatchify(x: torch.Tensor, patch: int, grid, channels: int = 3) -> torch.Tensor:
    """(B, T, h*w, p*p*C) -> (B, T, C, H, W), the inverse of PatchEmbed's rearrange; `grid` is h (square) or (h, w)."""
    h, w = frame_size(grid)
    return rearrange(x, "b t (h w) (p q c) -> b t c (h p) (w q)", h=h, w=w, p=patch, q=patch, c=channels)
