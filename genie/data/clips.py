"""A folder of videos as clips for training: discovery, a cached length index, the split, the DataModule.

Clips come out as uint8 `video` (T, H, W, 3) and int64 `actions` (T-1,) holding the ground-truth
action of each transition where a `*.actions.npy` sidecar exists and -1 elsewhere. Ground truth is
only ever read by evaluation metrics, never by training losses.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from genie.data.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoError,
    numbered_images,
    open_video,
    probe_video,
)
from genie.models.pixels import fit_frames
from genie.models.resolution import DEFAULT_FIT, Resolution, check_fit

log = logging.getLogger(__name__)

INDEX_FILE = ".genie_index.json"
INDEX_VERSION = 2  # 2: entries name their reader (decord, pyav, images) and damaged files


class DataError(RuntimeError):
    """A data folder that cannot be used; the message names the folder and the fix."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path  # a video file, or a folder of numbered images
    num_frames: int  # readable frames (fewer than the file claims when its tail is damaged)
    height: int  # as displayed (rotation metadata applied)
    width: int
    reader: str = "decord"  # decord, pyav or images (genie/data/video.py): the one that reads all its frames


def discover_videos(root: str | Path) -> list[Path]:
    """All videos under `root`, recursively, in a stable order: video files (GIFs included) and folders of
    numbered images (frame_0001.png, ...; `root` itself may be one)."""
    root = Path(root)
    files = [p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
    folders = {p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
    return sorted(files + [f for f in folders if numbered_images(f) is not None])


def _stat_key(path: Path) -> dict:
    """What tells a changed video: size and modification time (for an image folder, of its images)."""
    if path.is_dir():
        stats = [f.stat() for f in numbered_images(path) or []]
        return {
            "size": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            "count": len(stats),
        }
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def actions_path(video: str | Path) -> Path:
    """`x.mp4` -> `x.actions.npy`, the optional ground-truth sidecar."""
    video = Path(video)
    return video.with_name(video.stem + ".actions.npy")


def _probe(path: Path) -> dict:
    """genie.data.video.probe_video's answer, or {"error": why} for a file that cannot be used."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            return {"error": "empty file"}
        return probe_video(path)
    except VideoError as e:
        why = str(e).removeprefix(f"{path}: ")
        return {"error": why if why.startswith("cannot decode") else f"cannot decode: {why}"}
    except Exception as e:  # a reader's own exception: named, never its traceback
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return {"error": f"cannot decode ({message[:120]})"}


def index_videos(root: str | Path, progress: bool = True) -> dict[Path, dict]:
    """Frame count and size of every video under `root`, cached in `root/.genie_index.json`.

    An entry is reused while the file's size and modification time are unchanged.
    """
    root = Path(root)
    cache_file = root / INDEX_FILE
    cached: dict = {}
    if cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text())
            if data.get("version") == INDEX_VERSION:
                cached = data["files"]
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s: unreadable index cache, rebuilding it", cache_file)
    entries: dict[str, dict] = {}
    videos = discover_videos(root)
    todo = []
    for path in videos:
        rel = path.relative_to(root).as_posix()
        key = _stat_key(path)
        entry = cached.get(rel)
        if entry and all(entry.get(k) == v for k, v in key.items()):
            entries[rel] = entry
        else:
            todo.append((rel, path, key))
    if todo:
        from tqdm import tqdm

        for rel, path, key in tqdm(todo, desc=f"indexing {root}", unit="video", disable=not progress or len(todo) < 20):
            entries[rel] = {**key, **_probe(path)}
        try:
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "files": entries}))
            os.replace(tmp, cache_file)
        except OSError as e:
            log.warning("%s: cannot write the index cache (%s); it will be rebuilt next time", cache_file, e)
    return {root / rel: entries[rel] for rel in sorted(entries)}


def usable_videos(root: str | Path, min_frames: int, min_size: int = 1, progress: bool = True) -> list[VideoInfo]:
    """Videos under `root` with at least `min_frames` frames and sides >= `min_size`.

    Each skipped file gets one warning line, and so does each file whose damaged tail leaves only its
    readable prefix in use; both are summarised; none usable is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (generate one with `genie data sprites --out {root}`)")
    index = index_videos(root, progress=progress)
    if not index:
        raise DataError(
            f"data folder {root} holds no videos ({', '.join(VIDEO_EXTENSIONS)}, or folders of numbered images); "
            f"generate one with `genie data sprites --out {root}` or point --data at your videos"
        )
    usable, skipped, shortened = [], 0, 0
    for path, entry in index.items():
        reason = entry.get("error")
        if reason is None and entry["num_frames"] < min_frames:
            reason = f"too short ({entry['num_frames']} frames, clips need {min_frames})"
        if reason is None and min(entry["height"], entry["width"]) < min_size:
            reason = f"too small ({entry['width']}x{entry['height']}, need at least {min_size}x{min_size})"
        if reason:
            log.warning("skipping %s: %s", path, reason)
            skipped += 1
            continue
        if entry.get("damaged"):
            claimed = f" of {entry['declared_frames']}" if entry.get("declared_frames") else ""
            log.warning(
                "shortened %s: damaged after frame %d: using its %d%s frames that decode",
                path,
                entry["num_frames"],
                entry["num_frames"],
                claimed,
            )
            shortened += 1
        usable.append(
            VideoInfo(path, entry["num_frames"], entry["height"], entry["width"], entry.get("reader", "decord"))
        )
    if skipped or shortened:
        log.warning(
            "%s: skipped %d of %d videos, shortened %d (see warnings above)", root, skipped, len(index), shortened
        )
    if not usable:
        raise DataError(
            f"data folder {root}: none of its {len(index)} videos is usable (all corrupt, too short for "
            f"{min_frames} frames, or too small); lower data.seq_len or add longer videos"
        )
    return usable


def split_by_file(videos: list[VideoInfo], root: Path, val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Deterministic train/val split by file: files ordered by a hash of their relative path."""
    if len(videos) == 1:
        log.warning("only one usable video in %s: validating on the training video", root)
        return videos, videos
    ranked = sorted(videos, key=lambda v: zlib.crc32(f"{seed}:{v.path.relative_to(root).as_posix()}".encode()))
    num_val = min(len(videos) - 1, max(1, round(len(videos) * val_fraction)))
    val = sorted(ranked[:num_val], key=lambda v: v.path)
    train = sorted(ranked[num_val:], key=lambda v: v.path)
    return train, val


def load_actions(video: Path, num_frames: int) -> np.ndarray | None:
    """The sidecar's actions (num_frames - 1,), or None when there is none or it does not fit."""
    sidecar = actions_path(video)
    if not sidecar.is_file():
        return None
    try:
        actions = np.load(sidecar, allow_pickle=False).astype(np.int64).reshape(-1)
    except (OSError, ValueError) as e:
        log.warning("ignoring %s: unreadable (%s)", sidecar, e)
        return None
    if len(actions) < num_frames - 1:
        log.warning("ignoring %s: %d actions for %d frames (need frames - 1)", sidecar, len(actions), num_frames)
        return None
    return actions


class VideoClips(Dataset):
    """Fixed-length clips from a list of videos; readers (genie/data/video.py) open lazily inside each worker."""

    def __init__(
        self,
        videos: list[VideoInfo],
        seq_len: int,
        resolution: Resolution,
        frame_stride: int = 1,
        clip_step: int | None = None,
        max_clips: int | None = None,
        fit: str = DEFAULT_FIT,
    ):
        """`resolution`: int (square) or (H, W); `fit`: how frames of another aspect ratio are fitted to it
        (genie.models.pixels.fit_frames)."""
        self.videos = videos
        self.seq_len = seq_len
        self.resolution = resolution
        self.fit = check_fit(fit, "fit")
        self.frame_stride = frame_stride
        self.span = (seq_len - 1) * frame_stride + 1
        step = clip_step or self.span
        clips = [(i, s) for i, v in enumerate(videos) for s in range(0, v.num_frames - self.span + 1, step)]
        if max_clips is not None and len(clips) > max_clips:
            keep = np.linspace(0, len(clips) - 1, max_clips).round().astype(int)
            clips = [clips[k] for k in keep]
        self.clips = clips
        self._actions = [load_actions(v.path, v.num_frames) for v in videos]
        self._readers: dict[int, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.clips)

    def _reader(self, video_idx: int):
        if self._pid != os.getpid():  # a fresh process (DataLoader worker) opens its own readers
            # and keeps, unused, those a fork inherited: destroying one there waits forever on decord threads
            # that exist only in the parent (a worker started after the main process read a clip hung)
            self._inherited = [*getattr(self, "_inherited", []), self._readers]
            self._readers, self._pid = {}, os.getpid()
        reader = self._readers.get(video_idx)
        if reader is None:
            if len(self._readers) >= 32:
                self._readers.pop(next(iter(self._readers)))
            video = self.videos[video_idx]
            reader = open_video(video.path, video.reader, video.num_frames)
            self._readers[video_idx] = reader
        return reader

    def __getstate__(self) -> dict:
        # a worker started by spawn opens its own readers: readers are never pickled
        return {**self.__dict__, "_readers": {}, "_pid": None, "_inherited": []}

    def frame_indices(self, index: int) -> np.ndarray:
        """The frame numbers in its video of clip `index`: int64 (seq_len,), `frame_stride` apart."""
        _, start = self.clips[index]
        return start + np.arange(self.seq_len) * self.frame_stride

    def decode(self, video_idx: int, frames_idx: np.ndarray) -> np.ndarray:
        """The frames `frames_idx` of video `video_idx` as uint8 (T, H, W, 3) at `resolution` (CachedClips reads them
        from the frame cache)."""
        return fit_frames(self._reader(video_idx).get_batch(frames_idx.tolist()), self.resolution, self.fit)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video_idx, start = self.clips[index]
        frames_idx = self.frame_indices(index)
        try:
            frames = self.decode(video_idx, frames_idx)
        except Exception as e:
            raise RuntimeError(
                f"{self.videos[video_idx].path}: failed to decode frames {frames_idx[0]}..{frames_idx[-1]} ({e})"
            ) from None
        actions = np.full(self.seq_len - 1, -1, dtype=np.int64)
        truth = self._actions[video_idx]
        if truth is not None:
            # the action between sampled frames i and i+1; with frame_stride > 1 only when it is unambiguous
            for i in range(self.seq_len - 1):
                span = truth[frames_idx[i] : frames_idx[i + 1]]
                if len(span) and np.all(span == span[0]):
                    actions[i] = span[0]
        return {
            "video": torch.from_numpy(np.ascontiguousarray(frames)),  # (T, H, W, 3) uint8
            "actions": torch.from_numpy(actions),  # (T-1,) int64, -1 = unknown
            "video_index": torch.tensor(video_idx),
            "start": torch.tensor(start),
        }


class ClipStream(Sampler):
    """An endless, resumable stream of training clip indices: one seeded permutation per pass over the data.

    Each optimiser step consumes `batch_size * world_size` indices; rank r takes its slice of each
    such chunk. Iteration starts at `start_step` (an int, or a callable read at each `iter()`, such as
    the trainer's global step), so a resumed run, or a new epoch, continues exactly where it stopped.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, start_step=0, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __iter__(self):
        chunk = self.batch_size * self.world_size
        start = self.start_step() if callable(self.start_step) else self.start_step
        position = start * chunk + self.rank * self.batch_size
        epoch, perm = -1, None
        while True:
            for i in range(position, position + self.batch_size):
                if i // self.size != epoch:
                    epoch = i // self.size
                    perm = self._permutation(epoch)
                yield int(perm[i % self.size])
            position += chunk

    def __len__(self) -> int:  # one pass over the data, for progress displays; the stream itself never ends
        return self.size
