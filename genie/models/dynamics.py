"""The dynamics model: a MaskGIT ST-transformer that predicts a frame's tokens from past tokens and a latent action.

Frame t's tokens (partly replaced by [MASK]) get the embedding of the latent action a_{t-1} that led to
it added to every token; causal temporal attention lets frame t see frames < t only. Trained
Genie-style: each frame gets its own mask ratio drawn from U(mask_ratio_min, 1), and the loss is
cross-entropy on the masked tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genie.models.blocks import STConfig, STTransformer
from genie.models.resolution import Resolution, canonical_resolution, frame_size


@dataclass
class DynamicsConfig:
    """model: the MaskGIT dynamics model"""

    num_codes: int = 1024
    """tokenizer codebook size (set from the tokenizer)"""
    grid: Resolution = 16
    """tokens per frame: h (square) or (h, w) (set from the tokenizer)"""
    num_actions: int = 8
    """latent actions (set from the LAM)"""
    max_frames: int = 16
    """time positions: the training clip length (= data.seq_len, set from it)"""
    dim: int = 512
    """transformer width"""
    depth: int = 8
    """ST-transformer blocks"""
    num_heads: int = 8
    """attention heads"""
    mlp_ratio: float = 4.0
    """MLP hidden width / dim"""
    dropout: float = 0.0
    """dropout in the transformer blocks"""
    mask_ratio_min: float = 0.5
    """each training frame's mask ratio is drawn from U(mask_ratio_min, 1) (Genie: 0.5)"""
    clean_context_prob: float = 0.0
    """probability that a frame is left unmasked in training (at least one token is still masked): a clean
    past frame to copy from, as sampling always has; with every frame half masked, recalling a training
    episode beat copying from the context on small data (docs/results.md)"""
    context_noise: float = 0.0
    """training-time corruption of the tokens left unmasked: each frame replaces a fraction drawn from
    U(0, context_noise) of them with random ids, and the loss asks for the true ids there too, so the
    model learns to read past frames it generated itself, errors included (GameNGen, Valevski et al. 2024,
    sec. 3.2.1 noises its context frames for the same reason); 0 turns it off"""
    motion_weight: float = 1.0
    """loss weight of the scored tokens whose id differs from the same place in the previous frame (1 = plain
    MaskGIT): most tokens of a game frame are static and copied, so the few that carry the motion (the player, the
    balls) get little of the gradient; weighting them is the change weighting of motion-aware video losses"""
    tie_embeddings: bool = False
    """logits from the token embedding matrix (MaskGIT's output layer, Chang et al. 2022, and BERT's): a token
    the model has to copy from the previous frame scores by its own embedding, so copying works for token
    combinations never seen in training instead of being learned per token (docs/results.md)"""
    prev_frame_input: bool = False
    """a masked token of frame t >= 1 gets, added to [MASK]'s embedding, the embedding of the token at the same
    place in frame t-1 (our design, not from a paper): copying is the default input, and the first layer's spatial
    attention within the new frame already sees the previous frame's layout, so it can move what the action
    moves instead of first fetching the past through temporal attention. Frame t-1's true ids are used in
    training, as sampling always has them"""
    prev_frame_kernel: int = 1
    """with prev_frame_input: 1 reads the previous frame's token at the same place; k > 1 (odd) a learned k x k
    convolution over the previous frame's token embeddings, started as the identity, so a masked token sees where
    something moving by up to k // 2 tokens came from (ValueError unless odd and >= 1)"""
    action_dropout: float = 0.0
    """training-time probability that a frame's latent action is replaced by the null action (the embedding row
    frame 0 gets), so one model also learns the action-free prediction that classifier-free guidance
    (`guidance`) contrasts with (Ho & Salimans 2022; MUSE, Chang et al. 2023, sec. 2.7, guides MaskGIT this way)"""
    guidance: float = 1.0
    """classifier-free guidance weight w at sampling: logits = null + w * (action - null), where null is the same
    pass with the new frame's action replaced by the null action (the past keeps its actions); 1 = plain
    conditional sampling (one pass a MaskGIT step, otherwise two); meaningful only with action_dropout > 0 in
    training"""
    maskgit_steps: int = 8
    """MaskGIT steps per generated frame (sampling default, overridable per call)"""
    temperature: float = 1.0
    """sampling temperature, 0 = greedy (sampling default, overridable per call)"""

    def __post_init__(self):
        self.grid = canonical_resolution(self.grid, "dynamics grid")
        if not 0.0 <= self.action_dropout < 1.0:
            raise ValueError(f"action_dropout must be in [0, 1), got {self.action_dropout}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if self.prev_frame_kernel < 1 or self.prev_frame_kernel % 2 == 0:
            raise ValueError(f"prev_frame_kernel must be an odd number >= 1, got {self.prev_frame_kernel}")


class DynamicsModel(nn.Module):
    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.mask_id = cfg.num_codes  # one extra embedding row is the [MASK] token
        self.grid_size = frame_size(cfg.grid)  # (h, w) tokens per frame
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.token_embed = nn.Embedding(cfg.num_codes + 1, cfg.dim)
        self.action_embed = nn.Embedding(cfg.num_actions + 1, cfg.dim)  # last row: "no action" for frame 0
        self.pos_space = nn.Parameter(torch.randn(1, 1, self.num_tokens, cfg.dim) * 0.02)
        self.pos_time = nn.Parameter(torch.randn(1, cfg.max_frames, 1, cfg.dim) * 0.02)
        if cfg.prev_frame_input and cfg.prev_frame_kernel > 1:
            k = cfg.prev_frame_kernel
            self.prev_conv = nn.Conv2d(cfg.dim, cfg.dim, k, padding=k // 2)
            with torch.no_grad():  # the identity at the centre, a little noise elsewhere
                nn.init.normal_(self.prev_conv.weight, std=0.02 / k)
                self.prev_conv.weight[:, :, k // 2, k // 2] += torch.eye(cfg.dim)
                self.prev_conv.bias.zero_()
        self.transformer = STTransformer(
            STConfig(cfg.dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, qk_norm=True, causal_time=True)
        )
        if cfg.tie_embeddings:
            # BERT/MaskGIT's MLM head: dense + GELU + LayerNorm, then the embedding matrix and a per-token bias
            self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.LayerNorm(cfg.dim))
            self.head_bias = nn.Parameter(torch.zeros(cfg.num_codes))
        else:
            self.head = nn.Linear(cfg.dim, cfg.num_codes)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.action_embed.weight, std=0.02)
        self._compiled_pass = None  # set by compile_sampling()

    def prev_frame_embedding(self, prev_ids: torch.Tensor | None) -> torch.Tensor | None:
        """What a masked token reads of the previous frame: prev_ids (B, T, S) long, each frame's previous frame's
        ids in [0, num_codes) or -1 where there is none (never mask_id) -> (B, T, S, D) float, zero where -1 (with
        cfg.prev_frame_kernel > 1, after the k x k convolution); None when cfg.prev_frame_input is off or prev_ids
        is None."""
        if not self.cfg.prev_frame_input or prev_ids is None:
            return None
        prev = self.token_embed(prev_ids.clamp(min=0))  # (B, T, S, D)
        if hasattr(self, "prev_conv"):
            h, w = self.grid_size
            grid = rearrange(prev, "b t (h w) d -> (b t) d h w", h=h, w=w)
            prev = rearrange(self.prev_conv(grid), "(b t) d h w -> b t (h w) d", b=prev_ids.shape[0])
        return prev * (prev_ids >= 0)[..., None]

    def embed(
        self,
        ids: torch.Tensor,
        prev_actions: torch.Tensor,
        t0: int = 0,
        prev_ids: torch.Tensor | None = None,
        prev_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ids (B, T, S) (mask_id allowed) and the action that led to each frame (B, T) (-1 = none) -> (B, T, S, D).

        prev_ids (B, T, S) long: each frame's previous frame's ids, in [0, num_codes) or -1 where there is none (never
        mask_id), read by masked tokens when cfg.prev_frame_input is set; None = no previous frame given.
        prev_embedding: `prev_frame_embedding(prev_ids)` computed once (sampling reuses it at every MaskGIT step);
        given, prev_ids is not read."""
        actions = torch.where(prev_actions < 0, torch.full_like(prev_actions, self.cfg.num_actions), prev_actions)
        x = self.token_embed(ids) + self.action_embed(actions)[:, :, None]
        if prev_embedding is None:
            prev_embedding = self.prev_frame_embedding(prev_ids)
        if prev_embedding is not None:
            x = x + prev_embedding * (ids == self.mask_id)[..., None]
        return x + self.pos_space + self.pos_time[:, t0 : t0 + ids.shape[1]]

    @staticmethod
    def prev_frame_ids(ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T, S) -> each frame's previous frame's ids (B, T, S), -1 for frame 0."""
        return F.pad(ids[:, :-1], (0, 0, 1, 0), value=-1)

    @staticmethod
    def prev_actions(actions: torch.Tensor) -> torch.Tensor:
        """Transition actions (B, T-1) -> the action that led to each frame (B, T), -1 for frame 0."""
        return F.pad(actions, (1, 0), value=-1)

    def forward(self, ids: torch.Tensor, actions: torch.Tensor, prev_ids: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T, S), actions (B, T-1) -> logits (B, T, S, num_codes); prev_ids as in `embed` (in training:
        `prev_frame_ids` of the unmasked clip)."""
        return self.logits(self.transformer(self.embed(ids, self.prev_actions(actions), prev_ids=prev_ids)))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Transformer output (..., D) -> logits over the codebook (..., num_codes)."""
        if not self.cfg.tie_embeddings:
            return self.head(h)
        return self.head(h) @ self.token_embed.weight[: self.cfg.num_codes].t() + self.head_bias

    def random_mask(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boolean mask (B, T, S): each frame masks a fraction drawn from U(mask_ratio_min, 1) of its tokens (with
        probability clean_context_prob only one token)."""
        b, t, s = ids.shape
        ratio = torch.empty(b, t, 1, device=ids.device).uniform_(self.cfg.mask_ratio_min, 1.0, generator=generator)
        if self.cfg.clean_context_prob > 0:
            clean = torch.rand(b, t, 1, device=ids.device, generator=generator) < self.cfg.clean_context_prob
            ratio = torch.where(clean, torch.zeros_like(ratio), ratio)
        # exactly round(ratio * S) tokens per frame, at random positions (at least one)
        num_masked = (ratio * s).round().clamp(min=1)
        ranks = torch.rand(b, t, s, device=ids.device, generator=generator).argsort(-1).argsort(-1)
        return ranks < num_masked

    def corrupt(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace a fraction U(0, context_noise) per frame of the unmasked tokens of ids (B, T, S) with uniformly
        random ids; returns (the corrupted ids, bool (B, T, S) where tokens were replaced)."""
        b, t, s = ids.shape
        rate = torch.rand(b, t, 1, device=ids.device) * self.cfg.context_noise
        noisy = (torch.rand(b, t, s, device=ids.device) < rate) & ~mask
        return torch.where(noisy, torch.randint_like(ids, self.cfg.num_codes), ids), noisy

    def loss(self, ids: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MaskGIT loss: cross-entropy on the masked (and, with context_noise, corrupted) tokens of every frame
        of ids (B, T, S) long with transition actions (B, T-1) long; returns (scalar loss, {"masked_acc",
        "moving_acc"}): the argmax's accuracy on all masked tokens, and on those whose id changed since the previous
        frame."""
        if self.cfg.action_dropout > 0:  # the null action (index num_actions) for classifier-free guidance
            drop = torch.rand(actions.shape, device=actions.device) < self.cfg.action_dropout
            actions = torch.where(drop, torch.full_like(actions, self.cfg.num_actions), actions)
        mask = self.random_mask(ids)
        inputs = torch.where(mask, torch.full_like(ids, self.mask_id), ids)
        scored = mask
        if self.cfg.context_noise > 0:
            inputs, noisy = self.corrupt(inputs, mask)
            scored = mask | noisy
        # the previous frame as the context shows it: with context_noise, its corrupted tokens too
        prev_ids = self.prev_frame_ids(torch.where(mask, ids, inputs)) if self.cfg.prev_frame_input else None
        logits = self(inputs, actions, prev_ids)  # (B, T, S, V)
        # unscored tokens are ignored by target, not dropped with logits[mask]: boolean indexing sizes its
        # output from the data, a device-to-host read that stalls every training step
        targets = torch.where(scored, ids, torch.full_like(ids, -100))
        per_token = F.cross_entropy(
            logits.flatten(0, 2).float(), targets.flatten(), ignore_index=-100, reduction="none"
        ).view_as(ids)
        weight = scored.float()
        if self.cfg.motion_weight != 1.0:
            changed = F.pad(ids[:, 1:] != ids[:, :-1], (0, 0, 1, 0))  # (B, T, S); frame 0 has no previous frame
            weight = weight * torch.where(changed, self.cfg.motion_weight, 1.0)
        loss = (per_token * weight).sum() / weight.sum().clamp(min=1)
        with torch.no_grad():
            right = (logits.argmax(-1) == ids) & mask
            acc = right.sum() / mask.sum().clamp(min=1)
            # the same on the masked tokens that differ from the previous frame: what copying cannot get
            moved = mask & F.pad(ids[:, 1:] != ids[:, :-1], (0, 0, 1, 0))
            moving_acc = (right & moved).sum() / moved.sum().clamp(min=1)
        return loss, {"masked_acc": acc, "moving_acc": moving_acc}

    # ------------------------------------------------------------------------------------ sampling

    def prefill(self, ids: torch.Tensor, actions: torch.Tensor) -> list:
        """Cache the temporal keys/values of context frames ids (B, T, S) with transition actions (B, T-1)."""
        _, cache = self.transformer.prefill(self.embed(ids, self.prev_actions(actions)))
        return cache

    @torch.no_grad()
    def sample_next(
        self,
        cache: list,
        t_index: int,
        action: torch.Tensor,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        prev_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list]:
        """MaskGIT-decode the frame at time `t_index` after `action` (B,), given the past frames' cache and the
        last past frame's ids prev_ids (B, S) long (read when cfg.prev_frame_input is set).

        Starts fully masked; each step samples every masked token, keeps the most confident ones and
        re-masks the rest on a cosine schedule, with Gumbel noise on the confidences (MaskGIT's random
        sampling); temperature 0 takes each token's most likely id, without noise. Returns the new ids (B, S)
        and the new frame's per-block kv for extending the cache.
        """
        steps = steps or self.cfg.maskgit_steps
        temperature = self.cfg.temperature if temperature is None else temperature
        b, s = action.shape[0], self.num_tokens
        device = action.device
        ids = torch.full((b, 1, s), self.mask_id, dtype=torch.long, device=device)
        prev = action.view(b, 1)
        # read by the masked tokens only: computed once a frame, and not at all for the final pass (nothing masked)
        last = None if prev_ids is None else self.prev_frame_embedding(prev_ids.view(b, 1, s))
        frame_pass = self._compiled_pass or self.frame_pass
        w = self.cfg.guidance
        if w != 1.0:  # the action pass and the null-action pass as one batch of 2B against the cache twice
            both = torch.cat([prev, torch.full_like(prev, self.cfg.num_actions)])
            both_last = None if last is None else torch.cat([last, last])
            both_cache = [(torch.cat([k, k]), torch.cat([v, v])) for k, v in cache] if cache else cache
        for step in range(steps):
            masked = ids == self.mask_id  # (B, 1, S)
            if w == 1.0:
                logits, _ = frame_pass(self.embed(ids, prev, t0=t_index, prev_embedding=last), cache)  # (B, 1, S, V)
            else:
                pair, _ = frame_pass(
                    self.embed(torch.cat([ids, ids]), both, t0=t_index, prev_embedding=both_last), both_cache
                )
                cond, null = pair[:b], pair[b:]
                logits = null + w * (cond - null)
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                sampled = torch.multinomial(rearrange(probs, "b t s v -> (b t s) v"), 1, generator=generator).view(
                    b, 1, s
                )
                confidence = probs.gather(-1, sampled[..., None])[..., 0].log()
            else:
                confidence, sampled = torch.log_softmax(logits, dim=-1).max(-1)
            # how many tokens stay masked after this step (cosine schedule, 0 after the last step)
            keep_masked = math.floor(s * math.cos(math.pi / 2 * (step + 1) / steps))
            if keep_masked > 0 and temperature > 0:
                u = torch.rand(confidence.shape, device=device, generator=generator).clamp_(1e-9, 1 - 1e-9)
                confidence = confidence + temperature * (1 - (step + 1) / steps) * -torch.log(-torch.log(u))
            confidence = torch.where(masked, confidence, torch.full_like(confidence, float("inf")))
            ids = torch.where(masked, sampled, ids)
            if keep_masked > 0:
                lowest = confidence.topk(keep_masked, dim=-1, largest=False).indices
                ids = ids.scatter(-1, lowest, self.mask_id)
        _, new_kv = frame_pass(self.embed(ids, prev, t0=t_index), cache)
        if self._compiled_pass is not None:
            # a CUDA-graph replay reuses its output memory: keep a copy of what goes into the cache
            new_kv = [(k.clone(), v.clone()) for k, v in new_kv]
        return ids[:, 0], new_kv

    def frame_pass(self, x: torch.Tensor, cache: list) -> tuple[torch.Tensor, list]:
        """One new frame's embedded tokens x (B, 1, S, D) against the past frames' cache -> (float logits
        (B, 1, S, V), the frame's per-block kv). The per-frame work of sampling; `compile_sampling` compiles it."""
        h, new_kv = self.transformer.step(x, cache)
        return self.logits(h).float(), new_kv

    def compile_sampling(self, mode: str | None = None) -> None:
        """torch.compile the per-frame pass of sampling (default mode: CUDA graphs on a GPU, fused kernels on
        a CPU). The cache grows by a frame per step, so the compiled pass takes dynamic cache lengths; the
        first frames are slow while it compiles."""
        if mode is None:
            mode = "reduce-overhead" if next(self.parameters()).is_cuda else "default"
        self._compiled_pass = torch.compile(self.frame_pass, mode=mode, dynamic=None)
