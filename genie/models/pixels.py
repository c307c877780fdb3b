"""Frames between their stored form and the models' input: uint8 (T, H, W, 3) fitted to a model's
resolution (`fit_frames`: crop, pad or resize to another aspect ratio), and uint8 <-> float [0, 1] video.

torch and numpy only: the world model fits prompts with it without importing the data layer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genie.models.resolution import DEFAULT_FIT, check_fit, frame_size


def resize_frames(frames: np.ndarray, resolution) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, h, w, 3) at `resolution` (int R for R x R, or (h, w)), bilinear with
    antialiasing, whatever the aspect ratio: `fit_frames` is what keeps it.

    Done here rather than by decord's VideoReader(width, height), which fails for some sizes
    (e.g. 16, 24, 48: "DECORDArrayCopyFromTo: The size must exactly match"). Resized in uint8 (torch's
    channels-last kernel): 30x faster than in float on 720p frames, no float copy of HD frames, and
    within 1 of the float result.
    """
    size = frame_size(resolution)
    if frames.shape[1:3] == size:
        return frames
    frames = np.ascontiguousarray(frames)
    if not frames.flags.writeable:  # Pillow's arrays are read-only, which torch.from_numpy warns about
        frames = frames.copy()
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) channels-last uint8
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def fit_frames(frames: np.ndarray, resolution, fit: str = DEFAULT_FIT) -> np.ndarray:
    """uint8 frames (T, H, W, 3) of any size -> uint8 (T, h, w, 3) at `resolution` (int R for R x R, or (h, w)).

    The one place frames are brought to a model's size (training clips, the frame cache, infer-actions,
    rollout and play prompts, eval). `fit` (genie/models/resolution.py) handles another aspect ratio:
    "crop" centre-crops to the target aspect, then resizes; "pad" resizes to fit inside and pads with black
    (zero) bars, centred; "resize" squashes. Frames of the target's aspect ratio come out the same under
    all three. Raises ValueError for an unknown `fit`.
    """
    check_fit(fit, "fit")
    target_h, target_w = frame_size(resolution)
    height, width = frames.shape[1:3]
    if (height, width) == (target_h, target_w) or fit == "resize" or height * target_w == width * target_h:
        return resize_frames(frames, (target_h, target_w))
    if fit == "crop":
        if height * target_w > width * target_h:  # taller than the target: keep the middle rows
            keep = max(1, round(width * target_h / target_w))
            top = (height - keep) // 2
            frames = frames[:, top : top + keep]
        else:  # wider: keep the middle columns
            keep = max(1, round(height * target_w / target_h))
            left = (width - keep) // 2
            frames = frames[:, :, left : left + keep]
        return resize_frames(frames, (target_h, target_w))
    scale = min(target_h / height, target_w / width)  # "pad"
    inner_h = min(target_h, max(1, round(height * scale)))
    inner_w = min(target_w, max(1, round(width * scale)))
    out = np.zeros((len(frames), target_h, target_w, 3), dtype=np.uint8)
    top, left = (target_h - inner_h) // 2, (target_w - inner_w) // 2
    out[:, top : top + inner_h, left : left + inner_w] = resize_frames(frames, (inner_h, inner_w))
    return out


def video_to_float(video: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [0, 1] on the same device: (B, T, H, W, 3) video,
    (T, H, W, 3) frames or one (H, W, 3) image. The one uint8 -> float conversion of frames."""
    return video.movedim(-1, -3).float().div_(255.0)


def float_to_video(video: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [0, 1] -> uint8 (..., H, W, 3) on the CPU, clamped and rounded: (B, T, 3, H, W)
    video, (B, 3, H, W) frames or one image. The one float -> uint8 conversion of frames."""
    return (video.detach().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu()
