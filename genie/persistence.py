"""Persistence: does a world keep going? A long random-action rollout with memory, latency and collapse over time.

Persistence is one of the properties a video world model must have beside being causal, interactive,
real-time and physically plausible: the world must not run out of memory, slow down or fall apart
however long it is played. `persistence` plays `steps` frames with uniformly random latent actions
through the environment API (sliding context, streamed decoding) and records per step:

- memory: the process's resident set (and CUDA memory allocated, on a GPU), which must stay flat
  once the first context window is full;
- latency: wall time of each `step`;
- collapse: three statistics of each generated frame, compared with the range real frames of the data
  span: `contrast` (spatial standard deviation of luminance; a blank or washed-out frame has none),
  `roughness` (mean absolute difference between the luminance and its 3x3 box blur: token noise and
  static are far rougher than real frames) and `motion` (largest mean absolute difference between the
  frame and any of the previous 16: a frozen world stops changing while real ones under random actions
  keep moving) and `flicker` (mean absolute difference to the previous frame: output that changes wholesale
  every frame is not a world either); given the tokenizer's patch, also `blockiness` (the mean absolute luminance
  step across patch borders over the one inside patches: a world that dissolves into a quilt of token-sized
  blocks keeps a real frame's contrast, roughness and motion, but its edges all sit on the patch grid). A frame
  is degenerate when a statistic leaves the real range widened by a margin (`COLLAPSE_MARGIN`); the rollout has
  collapsed when more than `COLLAPSE_RATE` of its frames, or more than half of any 50 consecutive frames, are
  degenerate. The reference range comes from the real clips, so the measure needs no labels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from genie.data.clips import VideoClips
from genie.data.heldout import select_videos
from genie.data.video import write_gif
from genie.models.pixels import video_to_float
from genie.models.world import span_frames

MOTION_WINDOW = 16
STATISTICS = ("contrast", "roughness", "motion", "flicker", "blockiness")
# the real range widened: contrast and motion may fall to half the real 1st percentile, roughness, flicker and
# blockiness rise to twice the real 99th. (Motion's margin was a quarter until a CoinRun rollout that froze on one
# frame, bar a flicker of 0.0004, passed: real CoinRun's 1st percentile is 0.0011, so a quarter let it through.)
COLLAPSE_MARGIN = {"contrast": 0.5, "roughness": 2.0, "motion": 0.5, "flicker": 2.0, "blockiness": 2.0}
# luminance step (0-1) added to the inside-patch mean of blockiness, so flat frames do not divide by zero
BLOCKINESS_FLOOR = 0.002
COLLAPSE_RATE = 0.1  # of all frames, or
COLLAPSE_WINDOW, COLLAPSE_WINDOW_RATE = 50, 0.5  # of any 50 consecutive frames: a late collapse counts too


def luminance(frames: torch.Tensor) -> torch.Tensor:
    """Float frames (N, 3, H, W) in [0, 1] -> luminance (N, 1, H, W) (ITU-R BT.601 weights)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=frames.device).view(1, 3, 1, 1)
    return (frames.float() * weights).sum(1, keepdim=True)


def blockiness(y: torch.Tensor, patch: int) -> torch.Tensor:
    """Luminance (N, 1, H, W) -> float (N,): the mean absolute step between neighbouring pixels across the borders
    of a `patch` x `patch` grid, over the mean step inside the patches (plus BLOCKINESS_FLOOR). Real frames have
    their edges anywhere (measured on held-out sprite episodes: 1.8 median, 2.3 at the 99th percentile); decoded
    token quilts have them on the grid (6.5 median over a 200-step random rollout that dissolved)."""
    dx, dy = (y[..., :, 1:] - y[..., :, :-1]).abs(), (y[..., 1:, :] - y[..., :-1, :]).abs()
    on_x = (torch.arange(dx.shape[-1], device=y.device) + 1) % patch == 0
    on_y = (torch.arange(dy.shape[-2], device=y.device) + 1) % patch == 0
    border = dx[..., on_x].flatten(1).mean(1) + dy[..., on_y, :].flatten(1).mean(1)
    inside = dx[..., ~on_x].flatten(1).mean(1) + dy[..., ~on_y, :].flatten(1).mean(1)
    return border / (inside + BLOCKINESS_FLOOR)


def frame_statistics(frames: torch.Tensor, patch: int | None = None) -> dict[str, np.ndarray]:
    """Collapse statistics of a frame sequence, float (N, 3, H, W) in [0, 1] -> {"contrast", "roughness",
    "motion", "flicker"} and, with the tokenizer's `patch`, "blockiness", each float (N,); motion and flicker are
    nan for the first frame."""
    y = luminance(frames)
    contrast = y.flatten(1).std(1)
    roughness = (y - F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs().flatten(1).mean(1)
    motion = torch.full((len(y),), float("nan"))
    for t in range(1, len(y)):
        past = y[max(0, t - MOTION_WINDOW) : t]
        motion[t] = (past - y[t : t + 1]).abs().flatten(1).mean(1).max()
    flicker = torch.cat([torch.full((1,), float("nan")), (y[1:] - y[:-1]).abs().flatten(1).mean(1).cpu()])
    stats = {
        "contrast": contrast.cpu().numpy(),
        "roughness": roughness.cpu().numpy(),
        "motion": motion.numpy(),
        "flicker": flicker.numpy(),
    }
    if patch:
        stats["blockiness"] = blockiness(y, patch).cpu().numpy()
    return stats


def reference_bounds(clips: list[torch.Tensor], patch: int | None = None) -> dict[str, tuple[float, float]]:
    """The range of each statistic over real clips (each float (T, 3, H, W)), widened by COLLAPSE_MARGIN:
    {name: (low, high)} with the 1st and 99th percentiles of real frames as the range; "blockiness" only with the
    tokenizer's `patch`."""
    stats = [frame_statistics(c, patch) for c in clips]
    bounds = {}
    for name in [n for n in STATISTICS if n in stats[0]]:
        x = np.concatenate([s[name] for s in stats])
        x = x[np.isfinite(x)]
        low, high = np.quantile(x, [0.01, 0.99])
        if name in ("roughness", "flicker", "blockiness"):
            bounds[name] = (0.0, float(high) * COLLAPSE_MARGIN[name])
        else:
            bounds[name] = (float(low) * COLLAPSE_MARGIN[name], float("inf"))
    return bounds


def degenerate_frames(stats: dict[str, np.ndarray], bounds: dict[str, tuple[float, float]]) -> np.ndarray:
    """bool (N,): frames whose statistics leave the widened real range (a nan motion never flags)."""
    bad = np.zeros(len(stats["contrast"]), dtype=bool)
    for name, (low, high) in bounds.items():
        x = stats[name]
        bad |= np.isfinite(x) & ((x < low) | (x > high))
    return bad


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return psutil.Process().memory_info().rss / 2**20


@torch.no_grad()
def persistence(
    world, prompt: np.ndarray, bounds: dict, steps: int = 1000, seed: int = 0, progress: bool = True
) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """Play `steps` random latent actions from uint8 prompt frames (T, H, W, 3) at batch 1.

    Returns (summary, per-step series, uint8 frames (steps+1, H, W, 3)). Summary keys: steps,
    latency_ms_p50, latency_ms_p99, memory_peak_mb, memory_growth_mb (peak over the second half minus
    peak over the first half after the first context window), memory_slope_kb_per_step (fitted line),
    memory_flat (growth under 16 MB and under 4 MB a 1,000 steps by the slope), degenerate_fraction,
    worst_window_degenerate_fraction (of 50 consecutive frames), collapsed, first_degenerate_step, and the
    statistics' medians.
    """
    from tqdm import tqdm

    rng = torch.Generator().manual_seed(seed)
    actions = torch.randint(0, world.num_actions, (steps,), generator=rng)
    first = world.reset(prompt, seed=seed)
    # the frames are kept in an array filled (so its pages are resident) before the loop: the memory measured
    # is the world's, not this function's growing list
    video = np.full((steps + 1, *first.shape[1:]), 1, dtype=np.uint8)
    video[0] = first[0]
    latency, memory = np.zeros(steps), np.zeros(steps)
    for n in tqdm(range(steps), desc="persistence rollout", unit="frame", disable=not progress):
        start = time.perf_counter()
        frame = world.step(int(actions[n]))
        latency[n] = time.perf_counter() - start
        memory[n] = _memory_mb(world.device)
        video[n + 1] = frame[0]
    video = torch.from_numpy(video)  # uint8 (steps+1, H, W, 3)
    stats = frame_statistics(video_to_float(video), world.tokenizer.cfg.patch if "blockiness" in bounds else None)
    bad = degenerate_frames(stats, bounds)[1:]  # the prompt frame is real
    window = world.dynamics.cfg.max_frames
    settled = memory[window:] if steps > 2 * window else memory
    half = len(settled) // 2
    growth = float(settled[half:].max() - settled[:half].max()) if half else 0.0
    # a leak of a fixed size a step shows as a slope; 1 MB over 1,000 steps is allocator noise, not a leak
    slope = float(np.polyfit(np.arange(len(settled)), settled, 1)[0]) if len(settled) > 1 else 0.0
    windows = (
        np.convolve(bad.astype(float), np.ones(COLLAPSE_WINDOW) / COLLAPSE_WINDOW, "valid")
        if len(bad) >= COLLAPSE_WINDOW
        else np.array([bad.mean()])
    )
    summary = {
        "steps": steps,
        "latency_ms_p50": float(np.percentile(latency, 50) * 1e3),
        "latency_ms_p99": float(np.percentile(latency, 99) * 1e3),
        "memory_peak_mb": float(memory.max()),
        "memory_growth_mb": growth,
        "memory_slope_kb_per_step": slope * 1024,
        "memory_flat": bool(growth < 16.0 and slope * 1000 < 4.0),
        "degenerate_fraction": float(bad.mean()),
        "worst_window_degenerate_fraction": float(windows.max()) if len(windows) else 0.0,
        "collapsed": bool(bad.mean() > COLLAPSE_RATE or (len(windows) and windows.max() > COLLAPSE_WINDOW_RATE)),
        "first_degenerate_step": int(np.argmax(bad)) + 1 if bad.any() else None,
        "reference_bounds": {k: list(v) for k, v in bounds.items()},
    }
    for name in stats:
        summary[f"{name}_median"] = float(np.nanmedian(stats[name][1:]))
    series = {
        "latency_ms": latency * 1e3,
        "memory_mb": memory,
        "degenerate": bad,
        **{k: v[1:] for k, v in stats.items()},
    }
    return summary, series, video.numpy()


def plot(series: dict[str, np.ndarray], bounds: dict, out: str | Path, title: str = "") -> Path:
    """Save the per-step series of `persistence` as a PNG: memory, latency and the collapse statistics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(series["latency_ms"]) + 1)
    names = [name for name in STATISTICS if name in series]
    fig, axes = plt.subplots(2 + len(names), 1, figsize=(8, 2 * (2 + len(names))), sharex=True)
    axes[0].plot(steps, series["memory_mb"])
    axes[0].set_ylabel("memory (MB)")
    axes[0].ticklabel_format(useOffset=False, axis="y")
    axes[1].plot(steps, series["latency_ms"], lw=0.6)
    axes[1].set_ylabel("latency (ms)")
    for ax, name in zip(axes[2:], names):
        ax.plot(steps, series[name], lw=0.6)
        low, high = bounds[name]
        for value in (low, high):
            if np.isfinite(value) and value > 0:
                ax.axhline(value, color="red", ls="--", lw=0.8)
        bad = series["degenerate"]
        if bad.any():
            ax.scatter(steps[bad], series[name][bad], color="red", s=4)
        ax.set_ylabel(name)
    axes[-1].set_xlabel("generated frame")
    fig.suptitle(title or "random-action rollout (red dashes: real range; red dots: degenerate frames)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def persistence_command(world, data_dir, split: str, out: Path, steps: int = 1000, seed: int = 0) -> dict:
    """`genie eval --persistence N`: the rollout from the first clip of the split, reference bounds from up to
    32 real clips of it; writes <out>.persistence.json, .png (the plot) and .gif (the first 200 frames)."""

    length = min(MOTION_WINDOW * 2, 32)
    stride = world.frame_stride
    videos, _ = select_videos(data_dir, split, span_frames(length, stride), world.meta.get("training"), progress=False)
    clips = VideoClips(videos, length, world.resolution, stride, max_clips=32, fit=world.fit)
    real = [video_to_float(clips[i]["video"][None])[0] for i in range(len(clips))]
    bounds = reference_bounds(real, world.tokenizer.cfg.patch)
    prompt = clips[0]["video"][:1].numpy()
    summary, series, video = persistence(world, prompt, bounds, steps=steps, seed=seed)
    stem = out.with_suffix("")
    Path(f"{stem}.persistence.json").write_text(
        json.dumps({**summary, "series": {k: np.asarray(v, dtype=float).tolist() for k, v in series.items()}})
    )
    plot(series, bounds, f"{stem}.persistence.png")
    write_gif(f"{stem}.persistence.gif", video[:200])
    summary["files"] = [f"{stem}.persistence.json", f"{stem}.persistence.png", f"{stem}.persistence.gif"]
    return summary
