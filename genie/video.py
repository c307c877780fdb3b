"""Reading (decord) and writing (PyAV, Pillow) videos and images as uint8 arrays of shape (T, H, W, 3).

Videos are written as H.264 in RGB (`libx264rgb`, CRF 0): lossless, so decoded frames equal the
written ones bit for bit, which keeps generated datasets and their action sidecars exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names the file."""


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, lossless: bool = True) -> Path:
    """Write uint8 frames (T, H, W, 3) to .mp4/.mkv/.avi (H.264) or .gif; returns the path."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideoError(f"{path}: expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        return write_gif(path, frames, fps)
    import av  # lazy: not needed for training

    height, width = frames.shape[1:3]
    # yuv420p (the lossy fallback) needs even sizes
    if not lossless and (height % 2 or width % 2):
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        if lossless:
            stream = container.add_stream("libx264rgb", rate=fps)
            stream.pix_fmt = "rgb24"
            stream.options = {"crf": "0", "preset": "veryfast"}
        else:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
        stream.width, stream.height = width, height
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: str | Path, frames: np.ndarray, fps: int = 10) -> Path:
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return path


def resize_frames(frames: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, resolution, resolution, 3), bilinear with antialiasing.

    Done here rather than by decord's VideoReader(width, height), which fails for some sizes
    (e.g. 16, 24, 48: "DECORDArrayCopyFromTo: The size must exactly match").
    """
    if frames.shape[1] == resolution and frames.shape[2] == resolution:
        return frames
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def read_video(path: str | Path, resolution: int | None = None, max_frames: int | None = None) -> np.ndarray:
    """Decode a whole video (or its first `max_frames`) to uint8 (T, H, W, 3), resized if asked."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        count = len(reader) if max_frames is None else min(len(reader), max_frames)
        if count == 0:
            raise VideoError(f"{path}: video has no frames")
        frames = reader.get_batch(list(range(count))).asnumpy()
    except VideoError:
        raise
    except Exception as e:  # decord raises bare DECORDError/RuntimeError
        raise VideoError(f"{path}: cannot decode video ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return resize_frames(frames, resolution) if resolution else frames


def read_image(path: str | Path, resolution: int | None = None) -> np.ndarray:
    """Load an image as uint8 (H, W, 3), resized to resolution x resolution if asked."""
    from PIL import Image

    path = Path(path)
    try:
        image = Image.open(path).convert("RGB")
    except Exception as e:
        raise VideoError(f"{path}: cannot read image ({e})") from None
    if resolution:
        image = image.resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(image)


def read_frames(path: str | Path, resolution: int | None = None, max_frames: int | None = None) -> np.ndarray:
    """A video or a single image, as uint8 (T, H, W, 3)."""
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return read_image(path, resolution)[None]
    return read_video(path, resolution, max_frames)


def contact_sheet(clips: np.ndarray, pad: int = 2) -> np.ndarray:
    """Tile clips (N, T, H, W, 3) into one image: one row per clip, one column per frame."""
    n, t, h, w, c = clips.shape
    sheet = np.full((n * (h + pad) + pad, t * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        for j in range(t):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y : y + h, x : x + w] = clips[i, j]
    return sheet
