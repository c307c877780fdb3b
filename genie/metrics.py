"""Metrics under the field's names: PSNR, SSIM, codebook usage/perplexity, action NMI and linear-probe accuracy,
bootstrap intervals, and the sprite world's player position.

Pixel metrics take float videos in [0, 1] of shape (..., C, H, W).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

# torchmetrics is imported where it is used: importing it pulls in torchvision and torch._dynamo (about 3 s), and
# the play path reaches this module through the action map without computing a metric


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of float images (..., C, H, W) in [0, 1] (pred is clamped); returns float (...,).

    torchmetrics' peak_signal_noise_ratio per image, with the MSE floored at 1e-10 (100 dB for identical images).
    """
    lead = pred.shape[:-3]
    x = pred.float().clamp(0, 1).reshape(-1, *pred.shape[-3:])
    y = target.float().reshape(-1, *target.shape[-3:])
    from torchmetrics.functional.image import peak_signal_noise_ratio

    value = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return value.clamp(max=100.0).reshape(lead)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of float images (..., C, H, W) in [0, 1]; returns float (...,).

    torchmetrics' structural_similarity_index_measure (Wang et al. 2004), which always uses an 11-tap Gaussian
    window (sigma 1.5; a Gaussian window's size comes from sigma, so a kernel_size would be ignored, whatever the
    image size): both images are reflect-padded by 5 pixels and the SSIM map is averaged over every pixel of
    the image. Sides must exceed 5 pixels for the reflection padding. tests/test_metrics.py checks it against a
    direct implementation of that definition, 8x8 images included.
    """
    lead = pred.shape[:-3]
    x = pred.float().clamp(0, 1).reshape(-1, *pred.shape[-3:])
    y = target.float().reshape(-1, *target.shape[-3:])
    from torchmetrics.functional.image import structural_similarity_index_measure

    value = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    return value.reshape(lead)


def codebook_stats(ids: torch.Tensor, num_codes: int) -> dict[str, float]:
    """`codebook_usage` (fraction of codes used) and `codebook_perplexity` (exp entropy of code frequencies)."""
    return code_count_stats(torch.bincount(ids.flatten().long().cpu(), minlength=num_codes))


def code_perplexity(ids: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp entropy of the code frequencies in `ids`, as a tensor on their device (no host read)."""
    counts = torch.zeros(num_codes, device=ids.device).index_add_(
        0, ids.flatten().long(), torch.ones(ids.numel(), device=ids.device)
    )
    p = counts / counts.sum().clamp(min=1)
    return torch.exp(-torch.xlogy(p, p).sum())


def code_count_stats(counts: torch.Tensor) -> dict[str, float]:
    """`codebook_stats` from per-code counts (num_codes,), e.g. accumulated over a validation epoch."""
    counts = counts.detach().float().cpu()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).float().mean()), "codebook_perplexity": float(entropy.exp())}


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """NMI between two integer label arrays (N,), normalised by the arithmetic mean of the entropies
    (torchmetrics' normalized_mutual_info_score, sklearn's default); nan when empty, 1.0 when both are constant."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if len(a) == 0:
        return float("nan")
    if len(np.unique(a)) == 1 and len(np.unique(b)) == 1:
        return 1.0
    from torchmetrics.functional.clustering import normalized_mutual_info_score

    with warnings.catch_warnings():  # torchmetrics builds a sparse contingency table and warns about its checks
        warnings.simplefilter("ignore", UserWarning)
        value = normalized_mutual_info_score(
            torch.from_numpy(np.unique(a, return_inverse=True)[1]),
            torch.from_numpy(np.unique(b, return_inverse=True)[1]),
            "arithmetic",
        )
    return float(value) if torch.isfinite(value) else 0.0


def linear_probe_accuracy(
    features: np.ndarray, labels: np.ndarray, train_fraction: float = 0.5, steps: int = 300, seed: int = 0
) -> float:
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
    return fit_probe_accuracy(
        torch.from_numpy(features),
        torch.from_numpy(y),
        torch.from_numpy(train),
        torch.from_numpy(test),
        int(y.max()) + 1,
        steps,
    )


def fit_probe_accuracy(
    x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor, num_classes: int, steps: int = 300
) -> float:
    """Held-out accuracy of a multinomial logistic regression (L-BFGS, L2 1e-4) from features x (N, D) float to
    class ids y (N,) long, fitted on the `train` rows and scored on the `test` rows (index or bool tensors);
    features are standardised with the train rows' statistics."""
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    with torch.enable_grad():
        probe = torch.nn.Linear(x.shape[1], num_classes)
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
    """The mean of the finite values (None, nan and inf skipped) as a float; nan when none is left."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(values)) if values else float("nan")


def bootstrap_interval(
    values, groups=None, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-clip values (N,) (Efron & Tibshirani 1993, ch. 13).

    With `groups` (N,) (e.g. the video each clip comes from) whole groups are resampled (the cluster
    bootstrap), since clips of one video are not independent. Non-finite values are dropped; (nan, nan)
    when fewer than two values or groups remain.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    g = np.arange(len(x)) if groups is None else np.asarray(groups)
    keep = np.isfinite(x)
    x, g = x[keep], g[keep]
    _, g = np.unique(g, return_inverse=True)
    if len(x) < 2 or g.max() < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    sums, counts = np.bincount(g, weights=x), np.bincount(g).astype(np.float64)
    draws = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


# the sprite world's player (genie/data/sprites.py draws it (250, 220, 40) with a dark centre); no ball or
# background colour passes this test
def player_mask(frames: torch.Tensor) -> torch.Tensor:
    """Float frames (..., 3, H, W) in [0, 1] -> bool (..., H, W): pixels of the sprite world's yellow player."""
    r, g, b = frames.unbind(-3)
    return (r > 0.7) & (g > 0.6) & (b < 0.45) & (r - b > 0.35)


def player_position(
    frames: torch.Tensor, min_pixels: int = 20, max_extent: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (row, col) in pixels of the player in float frames (..., 3, H, W) -> (float (..., 2),
    bool (...,) found).

    `found` is False unless the player is there in one piece: at least `min_pixels` player-coloured pixels
    (an intact 6x6 player has 32) within a box of at most `max_extent` pixels a side (a player broken into
    corners or bars has neither); the centroid is then nan.
    """
    mask = player_mask(frames).float()
    h, w = mask.shape[-2:]
    count = mask.sum((-2, -1))
    rows = torch.arange(h, dtype=torch.float32, device=mask.device)
    cols = torch.arange(w, dtype=torch.float32, device=mask.device)
    cy = (mask.sum(-1) * rows).sum(-1) / count.clamp(min=1)
    cx = (mask.sum(-2) * cols).sum(-1) / count.clamp(min=1)

    def extent(profile: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # occupied span along one axis
        occupied = profile > 0
        last = torch.where(occupied, index, torch.full_like(index, -1)).amax(-1)
        first = torch.where(occupied, index, torch.full_like(index, 1e9)).amin(-1)
        return last - first + 1

    size = torch.maximum(extent(mask.sum(-1), rows), extent(mask.sum(-2), cols))
    found = (count >= min_pixels) & (size <= max_extent)
    pos = torch.stack([cy, cx], -1)
    return torch.where(found[..., None], pos, torch.full_like(pos, float("nan"))), found
