"""Latent actions for whole videos: `genie infer-actions`.

The LAM sees `max_frames` frames at once; longer videos are cut into overlapping windows. Its encoder
is causal, so the id of transition t depends only on the window's frames up to t+1; each transition
takes its id from the window that shows it with the most frames before it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from genie.lam import LatentActionModel, load_lam
from genie.video import VideoError, read_video, write_video

log = logging.getLogger(__name__)


def window_starts(num_frames: int, window: int) -> list[int]:
    """Starts of windows of `window` frames, half a window apart, the last one ending at the last frame."""
    if num_frames <= window:
        return [0]
    stride = max(1, window // 2)
    starts = list(range(0, num_frames - window, stride))
    return starts + [num_frames - window]


def to_model_input(video: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, R, R) in [0, 1] at the LAM's resolution."""
    frames = rearrange(torch.from_numpy(np.ascontiguousarray(video)), "t h w c -> t c h w").float().div(255)
    if frames.shape[-2:] != (resolution, resolution):
        frames = F.interpolate(frames, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return frames


@torch.no_grad()
def infer_actions(model: LatentActionModel, video: np.ndarray, window: int | None = None, batch_size: int = 32) -> list[int]:
    """Latent action ids (T-1 of them) for uint8 frames (T, H, W, 3) of any length, via overlapping windows."""
    window = window or model.cfg.max_frames
    if not 2 <= window <= model.cfg.max_frames:
        raise ValueError(f"window must be between 2 and the LAM's {model.cfg.max_frames} frames, got {window}")
    num_frames = len(video)
    if num_frames < 2:
        raise ValueError(f"a video needs at least 2 frames for one action, got {num_frames}")
    window = min(window, num_frames)
    device = next(model.parameters()).device
    frames = to_model_input(video, model.cfg.resolution).to(device)  # (T, 3, R, R)
    starts = window_starts(num_frames, window)
    ids = []
    for i in range(0, len(starts), batch_size):
        clips = torch.stack([frames[s : s + window] for s in starts[i : i + batch_size]])  # (N, W, 3, R, R)
        ids.append(model.infer_actions(clips).cpu())
    ids = torch.cat(ids)  # (num_windows, W-1)
    actions = []
    for t in range(num_frames - 1):
        # the first window (earliest start) that still holds frame t+1 shows transition t with the most history
        k = next(k for k, s in enumerate(starts) if t + 1 < s + window)
        actions.append(int(ids[k, t - starts[k]]))
    return actions


def stamp_actions(video: np.ndarray, actions: list[int], scale: int | None = None) -> np.ndarray:
    """Upscaled uint8 frames (T, sH, sW, 3) with "a=<id>" (the action taken after the frame) stamped on each."""
    from PIL import Image, ImageDraw

    scale = scale or max(1, 256 // max(video.shape[1:3]))
    out = []
    for t, frame in enumerate(video):
        image = Image.fromarray(np.ascontiguousarray(frame)).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
        draw = ImageDraw.Draw(image)
        label = f"a={actions[t]}" if t < len(actions) else "end"
        box = draw.textbbox((4, 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, 4), label, fill=(255, 255, 255))
        out.append(np.asarray(image))
    return np.stack(out)


def annotated_path(annotate_to: Path, index: int, count: int) -> Path:
    """The annotated file of video `index`: the given path for one video, `<stem>_<index><suffix>` for several."""
    return annotate_to if count == 1 else annotate_to.with_name(f"{annotate_to.stem}_{index:03d}{annotate_to.suffix}")


def infer_actions_command(model_path: str | Path, videos: list[str | Path], out: str | Path,
                          annotate: str | Path | None = None, window: int | None = None) -> dict:
    """Write {"model", "num_actions", "videos": [{"path", "num_frames", "actions"}]} to `out` as JSON.

    Unreadable videos are skipped with one line each; if any was skipped the command still writes the
    others, then fails with a one-line summary (non-zero exit).
    """
    model = load_lam(model_path)
    if window is not None and not 2 <= window <= model.cfg.max_frames:
        raise VideoError(f"--window {window}: must be between 2 and the LAM's {model.cfg.max_frames} frames")
    annotate_to = Path(annotate) if annotate else None
    if annotate_to is not None and annotate_to.suffix.lower() not in (".mp4", ".gif", ".mkv", ".avi"):
        raise VideoError(f"--annotate {annotate_to}: give a .mp4 or .gif file name")
    results, failed = [], []
    for index, path in enumerate(videos):
        try:
            frames = read_video(path, resolution=model.cfg.resolution)
            if len(frames) < 2:
                raise VideoError(f"{path}: only {len(frames)} frame, at least 2 are needed for an action")
        except VideoError as e:
            if len(videos) == 1:
                raise
            log.warning("skipping %s", e)
            failed.append({"path": str(path), "error": str(e)})
            continue
        actions = infer_actions(model, frames, window)
        results.append({"path": str(path), "num_frames": len(frames), "actions": actions})
        if annotate_to is not None:
            target = annotated_path(annotate_to, index, len(videos))
            write_video(target, stamp_actions(frames, actions), fps=5, lossless=False)
            log.info("annotated video: %s", target)
    report = {"model": str(model_path), "num_actions": model.cfg.num_actions, "videos": results}
    if failed:
        report["failed"] = failed
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    log.info("latent actions of %d videos: %s", len(results), out)
    if failed:
        raise VideoError(f"{len(failed)} of {len(videos)} videos could not be read (see warnings); the others are in {out}")
    return report
