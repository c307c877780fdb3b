"""Vector quantisation with dead-code restart, shared by the tokenizer (~1024 codes) and the LAM (8 codes).

Why VQ with restarts rather than FSQ: the LAM needs a tiny vocabulary of arbitrary size (8 actions), and
one mechanism for both models keeps the code small. Codes and inputs are L2-normalised (cosine lookup),
which keeps code norms equal and usage high; an exponential moving average of each code's usage finds
dead codes, which are re-initialised from encoder outputs of the current batch, drawn with probability
proportional to their quantisation error: a new code lands where the codebook fits the data worst, so
a cluster that shares a code with another one gets its own (uniform draws mostly land in the biggest
cluster, which already has a code).
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _eager_under_compile(fn):
    """`torch.compiler.disable(fn)`, applied at the first call instead of at import: the decorator imports
    torch._dynamo (0.9-2.7 s), which only compiled code needs, and eager code (play, rollout) never does."""
    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        usage_decay: float = 0.99,
        dead_fraction: float = 0.03,
        restart_every: int = 50,
    ):
        super().__init__()
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.beta = beta
        self.usage_decay = usage_decay
        self.dead_fraction = dead_fraction  # dead = used less than this share of a uniform code's usage
        self.restart_every = restart_every
        self.codebook = nn.Parameter(F.normalize(torch.randn(num_codes, code_dim), dim=-1))
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        # a host-side copy of `calls`, so deciding whether to restart needs no device read every step;
        # read from the buffer once after construction or a load
        self._host_calls: int | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_calls = None  # re-read `calls` from the loaded buffer at the next training step

    def codes(self) -> torch.Tensor:
        """The codebook, L2-normalised: float (num_codes, code_dim)."""
        return F.normalize(self.codebook, dim=-1)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer ids (...,) -> (..., code_dim)."""
        return F.embedding(ids, self.codes())

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (..., code_dim) -> (quantised z with straight-through gradient, ids (...), VQ loss)."""
        z = F.normalize(z, dim=-1)
        flat = z.reshape(-1, self.code_dim)
        codes = self.codes()
        ids = (flat.float() @ codes.float().t()).argmax(dim=-1)  # nearest code = highest cosine similarity
        quantised = F.embedding(ids, codes).view_as(z)
        loss = F.mse_loss(quantised, z.detach()) + self.beta * F.mse_loss(z, quantised.detach())
        if self.training:
            self._track_and_restart(flat.detach(), ids, codes.detach())
        return z + (quantised - z).detach(), ids.view(z.shape[:-1]), loss

    # eager under torch.compile: the host-side counter changes every step, and compiled code would be
    # specialised on its value and recompiled at every step
    @_eager_under_compile
    @torch.no_grad()
    def _track_and_restart(self, flat: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor) -> None:
        # index_add_, not bincount: bincount sizes its output from the largest id, a device-to-host read
        counts = torch.zeros(self.num_codes, device=ids.device).index_add_(
            0, ids, torch.ones_like(ids, dtype=torch.float)
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self.usage.mul_(self.usage_decay).add_(counts / counts.sum().clamp(min=1), alpha=1 - self.usage_decay)
        if self._host_calls is None:
            self._host_calls = int(self.calls)
        self.calls += 1
        self._host_calls += 1
        if self.restart_every <= 0 or self._host_calls % self.restart_every:
            return
        dead = self.usage < self.dead_fraction / self.num_codes
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        error = (flat.float() - codes.float()[ids]).pow(2).sum(-1)  # (N,) squared distance to the chosen code
        picks = flat[torch.multinomial(error + 1e-12, num_dead, replacement=num_dead > flat.shape[0])]
        picks = F.normalize(picks + 0.01 * torch.randn_like(picks), dim=-1).to(self.codebook.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(picks, src=0)  # keep codebooks identical across ranks
        self.codebook.data[dead] = picks
        self.usage[dead] = 1.0 / self.num_codes
