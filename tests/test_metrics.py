"""genie/metrics.py against independent reference implementations (numpy, written from the definitions).

tests/test_evaluate.py has the hand-checked cases (PSNR of a 0.1 error is 20 dB, SSIM of identical images is 1,
NMI of a relabelling is 1, the bootstrap interval narrows with more clips); these compare whole functions with
a second implementation on arbitrary inputs, and pin the edge cases the evaluation relies on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genie.metrics import (
    bootstrap_interval,
    code_count_stats,
    code_perplexity,
    codebook_stats,
    linear_probe_accuracy,
    mean_finite,
    normalized_mutual_info,
    psnr,
    ssim,
)


def reference_psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """10 log10(1 / MSE) per image (..., C, H, W), data range 1, pred clamped to [0, 1]."""
    mse = ((np.clip(pred, 0, 1) - target) ** 2).mean(axis=(-3, -2, -1))
    return 10 * np.log10(1.0 / mse)


def reference_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM (Wang et al. 2004) of one image (C, H, W), data range 1, K1 0.01, K2 0.03: Gaussian-weighted local
    means, variances (population, clamped at 0) and covariance, averaged over channels and every pixel, the
    borders reflect-padded by half the window (torchmetrics' convention; skimage crops the borders instead)."""
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    pad = (size - 1) // 2

    def blur(img: np.ndarray) -> np.ndarray:  # separable filtering of each channel, H then W, same size out
        img = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        img = np.apply_along_axis(lambda col: np.convolve(col, g, mode="valid"), 1, img)
        return np.apply_along_axis(lambda row: np.convolve(row, g, mode="valid"), 2, img)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy = np.maximum(blur(x * x) - mx**2, 0), np.maximum(blur(y * y) - my**2, 0)
    cxy = blur(x * y) - mx * my
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(value.mean())


def reference_nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information over the mean of the two entropies, from the contingency table."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum()
    ha, hb = -(pa * np.log(pa)).sum(), -(pb * np.log(pb)).sum()
    return mi / ((ha + hb) / 2)


def test_psnr_matches_the_definition_per_image_over_leading_dims():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 3, 8, 8)
    pred = target + 0.2 * torch.randn_like(target)  # some values fall outside [0, 1]: pred is clamped
    expected = reference_psnr(pred.double().numpy(), target.double().numpy())
    got = psnr(pred, target)
    assert got.shape == (2, 3) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_psnr_of_identical_images_is_capped_at_100_db():
    image = torch.rand(4, 3, 8, 8)
    assert torch.equal(psnr(image, image), torch.full((4,), 100.0))


def test_ssim_matches_the_gaussian_window_definition():
    rng = np.random.default_rng(0)
    target = rng.random((3, 3, 24, 24))
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1)
    got = ssim(torch.from_numpy(pred), torch.from_numpy(target))
    expected = [reference_ssim(p, t) for p, t in zip(pred, target)]
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)


def test_ssim_of_small_images_keeps_the_eleven_pixel_window():
    # torchmetrics sizes a Gaussian window from sigma (any kernel_size is ignored): 8x8 images get the 11-tap
    # window too, over the reflect-padded image
    rng = np.random.default_rng(1)
    target = rng.random((2, 3, 8, 8))
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1)
    got = ssim(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_allclose(got.numpy(), [reference_ssim(p, t) for p, t in zip(pred, target)], atol=1e-4)


def test_nmi_matches_the_contingency_table_definition():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, 600)
    codes = np.where(rng.random(600) < 0.7, actions % 3, rng.integers(0, 8, 600))  # partly informative
    expected = reference_nmi(actions, codes)
    assert 0.2 < expected < 0.9  # a case away from both ends
    assert normalized_mutual_info(actions, codes) == pytest.approx(expected, abs=1e-6)
    assert normalized_mutual_info(codes, actions) == pytest.approx(expected, abs=1e-6)  # symmetric


def test_nmi_of_a_hand_computed_table():
    # a = [0,0,1,1], b = [0,0,0,1]: H(a) = ln 2, H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4), I = H(b) - H(b|a) = H(b) - ln(2)/2
    ha = math.log(2)
    hb = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (hb - ha / 2) / ((ha + hb) / 2)
    assert normalized_mutual_info(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(expected, abs=1e-6)


def test_nmi_edge_cases():
    assert math.isnan(normalized_mutual_info(np.array([], dtype=int), np.array([], dtype=int)))
    assert normalized_mutual_info(np.zeros(10, int), np.ones(10, int)) == 1.0  # both constant: one cluster each
    assert normalized_mutual_info(np.zeros(10, int), np.arange(10) % 3) == pytest.approx(0.0, abs=1e-6)  # one constant
    # labels are ids, not numbers: any values that partition the same way score the same
    assert normalized_mutual_info(np.array([7, 7, 3, 3, 9]), np.array([-1, -1, 5, 5, 0])) == pytest.approx(1.0)


def test_codebook_usage_and_perplexity_by_hand():
    # codes 0 and 1 used equally, 2 and 3 never: half the book, perplexity 2
    stats = codebook_stats(torch.tensor([[0, 1], [1, 0]]), num_codes=4)
    assert stats == pytest.approx({"codebook_usage": 0.5, "codebook_perplexity": 2.0})
    # frequencies (1/2, 1/4, 1/4): perplexity exp(1.5 ln 2) = 2^1.5
    stats = code_count_stats(torch.tensor([2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    assert stats == pytest.approx({"codebook_usage": 3 / 8, "codebook_perplexity": 2**1.5})
    assert code_count_stats(torch.zeros(4)) == pytest.approx({"codebook_usage": 0.0, "codebook_perplexity": 1.0})


def test_on_device_perplexity_equals_the_host_one():
    ids = torch.randint(0, 16, (5, 37), generator=torch.Generator().manual_seed(0))
    assert float(code_perplexity(ids, 16)) == pytest.approx(codebook_stats(ids, 16)["codebook_perplexity"], rel=1e-5)
    assert float(code_perplexity(torch.full((9,), 3), 16)) == pytest.approx(1.0)


def test_linear_probe_reads_separable_labels_and_not_shuffled_ones():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    centres = rng.normal(0, 1, (4, 6)) * 4
    features = centres[labels] + rng.normal(0, 0.5, (400, 6))
    assert linear_probe_accuracy(features, labels) == 1.0
    shuffled = linear_probe_accuracy(features, rng.permutation(labels))
    assert shuffled < 0.45  # chance is 0.25
    assert math.isnan(linear_probe_accuracy(features, np.zeros(400, int)))  # one class: nothing to probe
    assert math.isnan(linear_probe_accuracy(features[:3], labels[:3]))  # too few rows to split


def test_mean_finite_skips_missing_and_non_finite_values():
    assert mean_finite([1.0, None, float("nan"), 3.0, float("inf")]) == 2.0
    assert math.isnan(mean_finite([None, float("nan")]))


def test_bootstrap_interval_approaches_the_normal_interval_for_many_clips():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 5000)
    half = 1.96 * x.std() / math.sqrt(len(x))
    low, high = bootstrap_interval(x, resamples=4000)
    assert low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials = 300
    covered = 0
    for seed in range(trials):
        low, high = bootstrap_interval(rng.exponential(1.0, 60), resamples=1000, seed=seed)  # skewed, mean 1
        covered += low <= 1.0 <= high
    # percentile intervals under-cover a little at n = 60 on skewed data; 300 trials add +-2.5 points of noise
    assert 0.87 <= covered / trials <= 0.99


def test_cluster_bootstrap_resamples_whole_videos():
    rng = np.random.default_rng(0)
    video_means = rng.normal(0.0, 1.0, 12)
    # 5 clips per video, all equal to the video's value: resampling videos is resampling their means
    values, groups = np.repeat(video_means, 5), np.repeat(np.arange(12), 5)
    assert bootstrap_interval(values, groups) == pytest.approx(bootstrap_interval(video_means))
    # ignoring the grouping treats 60 correlated clips as independent and gives a far too narrow interval
    low, high = bootstrap_interval(values)
    low_g, high_g = bootstrap_interval(values, groups)
    assert high - low < 0.6 * (high_g - low_g)
    # a single video cannot be resampled: no interval
    assert all(math.isnan(v) for v in bootstrap_interval([1.0, 2.0, 3.0], groups=[0, 0, 0]))


def test_bootstrap_interval_drops_non_finite_values():
    values = [1.0, 2.0, float("nan"), 3.0, float("inf"), 4.0]
    assert bootstrap_interval(values) == bootstrap_interval([1.0, 2.0, 3.0, 4.0])
