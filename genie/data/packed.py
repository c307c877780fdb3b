"""Packed datasets: the clips of a video folder written once as litdata shards, streamed to every rank.

`genie data pack SRC OUT` decodes every clip of SRC at the model's resolution and fit (the same decoder and
genie.models.pixels.fit_frames as training from video) and writes, with litdata's `optimize` (parallel workers,
a progress bar):

    OUT/train/    litdata chunks + index.json: the clips of the training files
    OUT/val/      the same for the validation files (split by file, genie.data.clips.split_by_file)
    OUT/genie_pack.json   what the clips were cut with (seq_len, resolution, fit, frame_stride, clip_step), the
                  split settings, and per split the source files with their genie.data.heldout.fingerprint, so
                  evaluation can still tell held-out files from training ones; written last, so a killed pack
                  is never mistaken for a finished one
    OUT/genie_pack.partial.json   the same settings while packing: a killed pack run again with them resumes

OUT may be a local folder or an object-store URI (s3://..., anything litdata and fsspec write to). A packed
folder is a drop-in `data.dir` for every stage: litdata's StreamingDataset streams the training clips,
shuffled, each rank and node taking a disjoint share, and the StreamingDataLoader's state travels in the
Lightning checkpoint, so a resumed run continues mid-epoch without repeating or skipping a clip.

An item is the dict the video folder gives: "video" uint8 (T, H, W, 3), "actions" int64 (T-1,) (-1 where
unknown), "video_index" (into the split's file list) and "start" (the clip's first frame in that file).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genie.data.clips import DataError, VideoClips, split_by_file, usable_videos
from genie.models.resolution import DEFAULT_FIT, frame_size, json_resolution

log = logging.getLogger(__name__)


def _quiet_litdata() -> None:
    # litdata logs its cache sizing at INFO once per split and worker; our own lines say what matters
    logging.getLogger("litdata").setLevel(max(logging.WARNING, logging.getLogger("litdata").level))


PACK_FILE = "genie_pack.json"
PARTIAL_FILE = "genie_pack.partial.json"  # the settings of a pack under way: a killed pack resumes if they match
PACK_FORMAT = "genie-pack"
PACK_VERSION = 1
SPLITS = ("train", "val")
CUT_KEYS = ("seq_len", "resolution", "fit", "frame_stride")  # what a training config must agree with
# the DataConfig fields `pack` takes: the cut, the clip step and the split
PACK_FIELDS = (*CUT_KEYS, "clip_step", "val_fraction", "seed")


def pack_settings(data_cfg) -> dict:
    """The keyword arguments of `pack` that a genie.config.DataConfig gives (PACK_FIELDS)."""
    return {key: getattr(data_cfg, key) for key in PACK_FIELDS}


REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "r2://", "hf://", "local:")  # what litdata streams from


WRITE_PREFIXES = ("s3://", "gs://")  # where litdata's optimize uploads and fsspec writes the manifest


def is_uri(path: str | Path) -> bool:
    """True for an object-store URI that litdata streams from: s3://bucket/prefix, gs://, azure://, r2://, hf://,
    or local:/path, a local folder read as if it were an object store (its chunks copied to a cache first)."""
    return str(path).startswith(REMOTE_PREFIXES)


def local_path(path: str | Path) -> str:
    """`path` with a file:// scheme dropped (litdata would read it as a relative folder named "file:")."""
    return str(path)[len("file://") :] if str(path).startswith("file://") else str(path)


def is_packed(path: str | Path) -> bool:
    """True when `path` is a packed dataset: a folder holding genie_pack.json, or any URI (read with fsspec)."""
    return is_uri(path) or (Path(local_path(path)) / PACK_FILE).is_file()


def _join(root: str | Path, name: str) -> str:
    return f"{str(root).rstrip('/')}/{name}" if is_uri(root) else str(Path(root) / name)


def read_manifest(path: str | Path) -> dict:
    """The genie_pack.json of a packed dataset as a dict. Raises DataError (one line, naming the file) when it is
    missing, unreadable or of another format."""
    path = local_path(path)
    where = _join(path, PACK_FILE)
    try:
        if is_uri(path) and not path.startswith("local:"):
            with _store_filesystem(path).open(where, "r") as f:
                manifest = json.load(f)
        else:
            manifest = json.loads(Path(where.removeprefix("local:")).read_text())
    except FileNotFoundError:
        raise DataError(f"{where}: not found; make the packed dataset with `genie data pack SRC {path}`") from None
    except Exception as e:
        raise DataError(f"{where}: unreadable ({type(e).__name__}: {e}); pack it again with --overwrite") from None
    if manifest.get("format") != PACK_FORMAT:
        raise DataError(f"{where}: not a genie packed dataset (format {manifest.get('format')!r})")
    return manifest


@dataclass
class _ClipWriter:
    """litdata `optimize` fn: clip index -> the item stored in the shards (picklable, so workers can run it)."""

    clips: VideoClips

    def __call__(self, index: int) -> dict:
        item = self.clips[index]
        return {
            "video": item["video"].numpy(),
            "actions": item["actions"].numpy(),
            "video_index": int(item["video_index"]),
            "start": int(item["start"]),
        }


def pack(
    src: str | Path,
    out: str | Path,
    seq_len: int = 16,
    resolution=64,
    fit: str = DEFAULT_FIT,
    frame_stride: int = 1,
    clip_step: int | None = 4,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_workers: int = 2,
    chunk_bytes: str = "64MB",
    overwrite: bool = False,
) -> dict:
    """Pack the clips of the video folder `src` into `out` (a local folder or a URI) and return its manifest.

    The clips are cut as genie.data.clips.VideoClips cuts them (seq_len frames, frame_stride apart, a new clip
    every clip_step frames; the validation split every span frames) and split by file as training splits a folder
    (val_fraction, seed). Unreadable videos are skipped and counted (genie.data.clips.usable_videos). A local
    `out` that already holds a finished pack is refused unless `overwrite`. A killed local pack resumes: run with
    the same arguments on the same files, the finished split is kept and the other continues from its last
    finished chunks (litdata's `use_checkpoint`); with other settings or files it is packed again from the
    start. Raises DataError for an unusable `src` or an existing `out`.
    """
    from litdata import optimize  # lazy: only packing and packed training need litdata

    _quiet_litdata()
    src, out = Path(local_path(src)), local_path(out)
    folder = out = out.removeprefix("local:")  # local:/path is a read-side stand-in for an object store
    if is_uri(out) and not out.startswith(WRITE_PREFIXES):
        raise DataError(f"{out}: litdata writes only to a local folder, s3:// or gs://; pack there and copy")
    if is_uri(out):
        _store_filesystem(out)  # before hours of packing, not at the manifest
    if not is_uri(folder) and (Path(folder) / PACK_FILE).exists() and not overwrite:
        raise DataError(f"{out}: already a packed dataset; pass --overwrite to replace it, or pick another OUT")
    span = (seq_len - 1) * frame_stride + 1
    videos = usable_videos(src, min_frames=span, min_size=min(*frame_size(resolution), 8))
    train, val = split_by_file(videos, src, val_fraction, seed)
    from genie.data.heldout import fingerprint

    manifest = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "source": str(src.resolve()),
        "seq_len": seq_len,
        "resolution": json_resolution(resolution),
        "fit": fit,
        "frame_stride": frame_stride,
        "clip_step": clip_step,
        "val_fraction": val_fraction,
        "seed": seed,
        "splits": {},
    }
    plan = {}  # split -> (clips, manifest entry)
    for split, files in (("train", train), ("val", val)):
        clips = VideoClips(files, seq_len, resolution, frame_stride, clip_step if split == "train" else None, fit=fit)
        plan[split] = (
            clips,
            {
                "clips": len(clips),
                "frames": len(clips) * seq_len,
                "files": [v.path.relative_to(src).as_posix() for v in files],
                "fingerprints": [fingerprint(v.path) for v in files],
            },
        )
    intent = {**manifest, "splits": {split: entry for split, (_, entry) in plan.items()}}
    intent.update(num_workers=num_workers, chunk_bytes=chunk_bytes)
    resume = not is_uri(folder) and not overwrite and _partial(folder) == intent
    if not is_uri(folder) and Path(folder).exists() and any(Path(folder).iterdir()) and not resume:
        ours = any((Path(folder) / name).exists() for name in (PACK_FILE, PARTIAL_FILE))
        if not ours and not overwrite:
            raise DataError(f"{out}: a folder that is not a packed dataset; pick an empty or new OUT")
        if (Path(folder) / PARTIAL_FILE).exists() and not overwrite:
            log.warning("%s: a killed pack of other settings or files; packing again from the start", out)
        shutil.rmtree(folder)  # a finished pack with --overwrite, or a killed pack that cannot be resumed
    if not is_uri(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / PARTIAL_FILE).write_text(json.dumps(intent, indent=1))
    started = time.perf_counter()
    for split, (clips, entry) in plan.items():
        done = not is_uri(folder) and (Path(folder) / split / "index.json").is_file()
        if resume:
            log.info("%s/%s: %s", out, split, "already packed" if done else "resuming the killed pack")
        if len(clips) and not (resume and done):
            optimize(
                fn=_ClipWriter(clips),
                inputs=list(range(len(clips))),
                output_dir=_join(out, split),
                num_workers=max(1, min(num_workers, len(clips))),
                chunk_bytes=chunk_bytes,
                reorder_files=False,
                start_method="fork",
                use_checkpoint=True,  # a killed pack resumes from its last finished chunks
            )
        manifest["splits"][split] = entry
    manifest["pack_seconds"] = round(time.perf_counter() - started, 1)
    _write_manifest(out, manifest)
    if not is_uri(folder):
        (Path(folder) / PARTIAL_FILE).unlink(missing_ok=True)
    return manifest


def _partial(folder: str) -> dict | None:
    """The settings a killed pack of `folder` was started with (its genie_pack.partial.json), or None."""
    try:
        return json.loads((Path(folder) / PARTIAL_FILE).read_text())
    except (OSError, ValueError):
        return None


def _store_filesystem(uri: str):
    """The fsspec filesystem of an object-store URI (for genie_pack.json); DataError naming the package to install
    when fsspec has no backend for it here (s3fs for s3://, gcsfs for gs://)."""
    import fsspec

    protocol = uri.split("://", 1)[0]
    try:
        return fsspec.filesystem(protocol)
    except (ImportError, ValueError) as e:
        need = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "azure": "adlfs"}.get(
            protocol, "its fsspec backend"
        )
        raise DataError(
            f"{uri}: cannot reach {protocol}:// for genie_pack.json ({type(e).__name__}); pip install {need}"
        ) from None


def _write_manifest(out: str | Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1)
    if out.startswith("local:"):
        out = out.removeprefix("local:")
    elif is_uri(out):
        with _store_filesystem(out).open(_join(out, PACK_FILE), "w") as f:
            f.write(text)
        return
    tmp = Path(out) / (PACK_FILE + ".tmp")
    tmp.write_text(text)
    tmp.replace(Path(out) / PACK_FILE)


def check_cut(manifest: dict, data_cfg, where: str | Path) -> None:
    """Raise DataError (one line) when the clips of a packed dataset were cut otherwise than `data_cfg`
    (genie.config.DataConfig) asks: seq_len, resolution, fit and frame_stride must agree."""
    wanted = {key: getattr(data_cfg, key) for key in CUT_KEYS}
    wanted["resolution"] = json_resolution(wanted["resolution"])
    differ = [f"{k} {manifest.get(k)!r} (config {v!r})" for k, v in wanted.items() if manifest.get(k) != v]
    if differ:
        raise DataError(
            f"{where}: packed with {', '.join(differ)}; pack the videos again with these settings "
            "(genie data pack --seq-len/--resolution/--fit/--frame-stride) or change the config"
        )


def check_shards(split_dir: str | Path) -> None:
    """Raise DataError naming the first chunk of a local packed split that is missing or truncated (its size
    differs from what index.json records), so a damaged shard is a one-line error instead of a hang or a
    decoding failure deep in a worker. Object-store splits are not checked here."""
    if is_uri(split_dir):
        return
    index = Path(split_dir) / "index.json"
    try:
        chunks = json.loads(index.read_text())["chunks"]
    except FileNotFoundError:
        raise DataError(f"{index}: not found; the packed split is incomplete, pack it again with --overwrite") from None
    except Exception as e:
        raise DataError(f"{index}: unreadable ({type(e).__name__}); pack it again with --overwrite") from None
    for chunk in chunks:
        path = Path(split_dir) / chunk["filename"]
        if not path.is_file():
            raise DataError(f"{path}: shard missing; pack the dataset again with --overwrite")
        if path.stat().st_size != chunk["chunk_bytes"]:
            raise DataError(
                f"{path}: shard truncated or damaged ({path.stat().st_size} bytes, index.json records "
                f"{chunk['chunk_bytes']}); pack the dataset again with --overwrite"
            )


def _to_tensors(item: dict) -> dict:
    return {
        "video": torch.from_numpy(np.ascontiguousarray(item["video"])),
        "actions": torch.from_numpy(np.asarray(item["actions"], dtype=np.int64)),
        "video_index": torch.tensor(int(item["video_index"])),
        "start": torch.tensor(int(item["start"])),
    }


def packed_split(path: str | Path, split: str, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
    """The clips of one split ("train" | "val") of a packed dataset as a litdata StreamingDataset whose items are
    the tensors described in the module docstring. Under torch.distributed (or several DataLoader workers) each
    rank reads a disjoint share of the clips. Raises DataError for a missing or damaged split."""
    from litdata import StreamingDataset

    _quiet_litdata()
    split_dir = _join(local_path(path), split)
    check_shards(split_dir)
    try:
        return StreamingDataset(split_dir, shuffle=shuffle, seed=seed, drop_last=drop_last, transform=_to_tensors)
    except Exception as e:
        raise DataError(f"{split_dir}: cannot be streamed ({type(e).__name__}: {e})") from None


def source_training_videos(manifest: dict) -> list:
    """The training files of a packed dataset as genie.data.clips.VideoInfo, read from its source folder when
    that folder is still on this machine (for the bundle's action map); [] when it is not."""
    src = Path(manifest["source"])
    if not src.is_dir():
        return []
    wanted = set(manifest["splits"]["train"]["files"])
    videos = usable_videos(src, min_frames=(manifest["seq_len"] - 1) * manifest["frame_stride"] + 1, progress=False)
    return [v for v in videos if v.path.relative_to(src).as_posix() in wanted]
