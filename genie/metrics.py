"""Metrics named as in DESIGN.md: PSNR, SSIM, codebook usage/perplexity, action NMI and linear-probe accuracy.

Pixel metrics take float videos in [0, 1] of shape (..., C, H, W).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB over the last three axes (C, H, W); returns shape (...,)."""
    mse = (pred.float().clamp(0, 1) - target.float()).pow(2).flatten(-3).mean(-1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image (uniform window, as in scikit-image's default), shape (...,)."""
    lead = pred.shape[:-3]
    x = pred.float().clamp(0, 1).reshape(-1, *pred.shape[-3:])
    y = target.float().reshape(-1, *target.shape[-3:])
    window = min(window, x.shape[-1], x.shape[-2])
    c1, c2 = 0.01**2, 0.03**2

    def mean(v: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(v, window, stride=1)

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(lead)


def codebook_stats(ids: torch.Tensor, num_codes: int) -> dict[str, float]:
    """`codebook_usage` (fraction of codes used) and `codebook_perplexity` (exp entropy of code frequencies)."""
    return code_count_stats(torch.bincount(ids.flatten().long().cpu(), minlength=num_codes))


def code_perplexity(ids: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp entropy of the code frequencies in `ids`, as a tensor on their device (no host read)."""
    counts = torch.zeros(num_codes, device=ids.device).index_add_(0, ids.flatten().long(), torch.ones(ids.numel(), device=ids.device))
    p = counts / counts.sum().clamp(min=1)
    return torch.exp(-torch.xlogy(p, p).sum())


def code_count_stats(counts: torch.Tensor) -> dict[str, float]:
    """`codebook_stats` from per-code counts (num_codes,), e.g. accumulated over a validation epoch."""
    counts = counts.detach().float().cpu()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).float().mean()), "codebook_perplexity": float(entropy.exp())}


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """NMI between two label arrays, normalised by the arithmetic mean of the entropies (sklearn's default)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if len(a) == 0:
        return float("nan")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (pa[:, None] * pb[None, :])[nz])).sum())
    ha = -float((pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = -float((pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha == 0 and hb == 0:
        return 1.0
    denom = (ha + hb) / 2
    return mi / denom if denom > 0 else 0.0


def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray, train_fraction: float = 0.5, steps: int = 300, seed: int = 0) -> float:
    """Accuracy on a held-out split of a multinomial logistic regression from features to labels."""
    features = np.asarray(features, dtype=np.float32).reshape(len(labels), -1)
    labels = np.asarray(labels)
    n = len(labels)
    if n < 4 or len(np.unique(labels)) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cut = max(1, min(n - 1, int(n * train_fraction)))
    train, test = order[:cut], order[cut:]
    _, y = np.unique(labels, return_inverse=True)
    x = torch.from_numpy(features)
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    y = torch.from_numpy(y)
    with torch.enable_grad():
        probe = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
        opt = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(probe(x[train]), y[train]) + 1e-4 * probe.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        return float((probe(x[test]).argmax(-1) == y[test]).float().mean())


def mean_finite(values) -> float:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(values)) if values else float("nan")
