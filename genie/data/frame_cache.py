"""Decoded training frames for the tokenizer and LAM stages (`data.frame_cache: true`).

Both stages train on pixels, and decord delivers about 490 random 64x64 CoinRun frames a second per
worker on the development CPU (each clip seeks from a keyframe; scripts/data_budget.py): on an H100
the LAM stage would consume frames several times faster than eight decode workers deliver them. With the
cache, every training video is decoded once, at the training resolution, into `<run_dir>/frame_cache/`:

    frames.npy   (F, H, W, 3) uint8: every frame of every training video, video after video
    offsets.npy  (V + 1,) int64: video v holds frames offsets[v] .. offsets[v+1]-1
    meta.json    what the cache was built from; written last, so a killed build is never mistaken for a
                 finished one

A training clip is then one read from a memory-mapped file (contiguous at frame_stride 1). The cache is keyed by the
training videos (path, size, modification time), the resolution and data.fit, and rebuilt when they
change. Frames are exactly what the video loader gives (the same decoder, the same genie.models.pixels.fit_frames).
It costs H*W*3 bytes a frame on disk (12 kB at 64x64): the build refuses to start when the disk lacks the room.
Validation clips are still decoded from video.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from genie.data.cachedir import META_FILE, matches, publish, tmp_dir, videos_digest, wait_for
from genie.data.clips import DataError, VideoClips
from genie.data.ranks import local_rank
from genie.models.pixels import fit_frames
from genie.models.resolution import frame_size, json_resolution

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: frames resized in uint8 (genie.models.pixels.resize_frames)
CHUNK_BYTES = 64 * 2**20  # decoded frames per work item while building (at the video's own size)


def cache_key(clips: VideoClips) -> dict:
    """What the frame cache of `clips` depends on (cache version, resolution, fit, the videos' digest): the dict
    stored in its meta.json and compared by cachedir.matches."""
    return {
        "version": CACHE_VERSION,
        "resolution": json_resolution(clips.resolution),
        "fit": clips.fit,
        "videos": videos_digest(clips.videos),
    }


class _Chunks(Dataset):
    """Work items of the build: (video, first frame) -> that chunk of frames decoded and resized."""

    def __init__(self, clips: VideoClips):
        self.clips = clips
        self.items = []  # (video, first frame, frames): at most 256 frames or CHUNK_BYTES of decoded video each
        for v, video in enumerate(clips.videos):
            chunk = max(1, min(256, CHUNK_BYTES // max(1, video.height * video.width * 3)))
            self.items += [(v, s, min(chunk, video.num_frames - s)) for s in range(0, video.num_frames, chunk)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        v, start, count = self.items[index]
        path = self.clips.videos[v].path
        try:
            frames = self.clips._reader(v).get_batch(list(range(start, start + count)))
        except Exception as e:
            frames, error = None, e
        if frames is None or len(frames) != count:
            why = error if frames is None else f"{len(frames)} frames came back"
            raise DataError(
                f"{path}: failed to decode frames {start}..{start + count - 1} for the frame cache ({why}); "
                f"remove the file or set data.frame_cache=false"
            )
        frames = fit_frames(frames, self.clips.resolution, self.clips.fit)
        return v, start, torch.from_numpy(np.ascontiguousarray(frames))


def build_frame_cache(clips: VideoClips, cache_dir: str | Path, num_workers: int = 2, progress: bool = True) -> Path:
    """Decode every frame of `clips.videos` at `clips.resolution` into `cache_dir` (atomically)."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    key = cache_key(clips)
    height, width = frame_size(clips.resolution)
    counts = [video.num_frames for video in clips.videos]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    need = int(offsets[-1]) * height * width * 3
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir.parent).free
    if need > 0.9 * free:
        raise DataError(
            f"the frame cache needs {need / 2**30:.1f} GiB in {cache_dir.parent}, {free / 2**30:.1f} GiB are free: "
            f"free some space or set data.frame_cache=false (decode video every step)"
        )
    tmp = tmp_dir(cache_dir)
    shape = (int(offsets[-1]), height, width, 3)
    out = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=shape)
    try:  # reserve the blocks now: a disk that fills up later is an error here, not a SIGBUS mid-build
        with open(tmp / "frames.npy", "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        del out
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"cannot reserve {need / 2**30:.1f} GiB for the frame cache in {cache_dir.parent} ({e.strerror or e}): "
            f"free some space or set data.frame_cache=false"
        ) from None
    np.save(tmp / "offsets.npy", offsets)
    loader = DataLoader(_Chunks(clips), batch_size=None, shuffle=False, num_workers=num_workers)
    start_time = time.perf_counter()
    with tqdm(total=int(offsets[-1]), desc="frame cache", unit="frame", disable=None if progress else True) as bar:
        for v, start, frames in loader:
            out[offsets[v] + start : offsets[v] + start + len(frames)] = frames.numpy()
            bar.update(len(frames))
    out.flush()
    del out
    seconds = time.perf_counter() - start_time
    meta = {
        **key,
        "num_videos": len(counts),
        "num_frames": int(offsets[-1]),
        "bytes": need,
        "build_seconds": round(seconds, 2),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    publish(tmp, cache_dir, key)
    log.warning(
        "frame cache: %d frames of %d videos decoded in %.1f s -> %s (%.1f MiB)",
        offsets[-1],
        len(counts),
        seconds,
        cache_dir,
        need / 2**20,
    )
    return cache_dir


def ensure_frame_cache(
    clips: VideoClips,
    cache_dir: str | Path,
    num_workers: int = 2,
    progress: bool = True,
    wait_seconds: float = 4 * 3600,
) -> Path:
    """The cache for these videos: reused when its key matches, else built (by local rank 0 only)."""
    cache_dir = Path(cache_dir)
    key = cache_key(clips)
    if matches(cache_dir, key):
        return cache_dir
    if local_rank() != 0:
        return wait_for(cache_dir, key, "frame cache", wait_seconds)
    return build_frame_cache(clips, cache_dir, num_workers, progress)


class CachedClips(VideoClips):
    """VideoClips whose frames come from the frame cache: item n equals VideoClips item n."""

    def __init__(self, clips: VideoClips, cache_dir: str | Path):
        self.__dict__.update(clips.__dict__)
        self.cache_dir = Path(cache_dir)
        self.offsets = np.load(self.cache_dir / "offsets.npy")
        if len(self.offsets) != len(self.videos) + 1:
            raise RuntimeError(
                f"{self.cache_dir}: cached {len(self.offsets) - 1} videos for {len(self.videos)}; "
                f"delete the folder to rebuild it"
            )
        self._frames, self._frames_pid = None, None

    def __getstate__(self) -> dict:
        # a worker started by spawn maps the file itself: the mapped frames are never pickled
        return {**super().__getstate__(), "_frames": None, "_frames_pid": None}

    def decode(self, video_idx: int, frames_idx: np.ndarray) -> np.ndarray:
        """Frames `frames_idx` (int array, ascending) of video `video_idx` from the cache: uint8 (len(frames_idx),
        H, W, 3), read through a per-process memory map."""
        if self._frames_pid != os.getpid():  # each worker process maps the file itself
            self._frames, self._frames_pid = np.load(self.cache_dir / "frames.npy", mmap_mode="r"), os.getpid()
        first = self.offsets[video_idx]
        if self.frame_stride == 1:
            return np.array(self._frames[first + frames_idx[0] : first + frames_idx[-1] + 1])
        return self._frames[first + frames_idx]
