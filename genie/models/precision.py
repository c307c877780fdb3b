"""Mixed precision outside Lightning (the token-cache build and bench): one autocast context for both.

torch only, so the data layer and the commands can share it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype a Lightning precision string ("bf16-mixed", "16-mixed", "32-true", ...) means on
    `device`: torch.bfloat16 or torch.float16 on CUDA, None (full precision) for anything else or off CUDA."""
    if device.type == "cuda" and precision.startswith("bf16"):
        return torch.bfloat16
    if device.type == "cuda" and precision.startswith("16"):
        return torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """torch.autocast on `device`'s type in `dtype`, or a no-op context when `dtype` is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
