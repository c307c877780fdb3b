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
import re
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
    path = local_path(path).removeprefix("local:")  # local:/path is read as the local folder it is
    where = _join(path, PACK_FILE)
    try:
        with _filesystem(path).open(where, "r") as f:
            manifest = json.load(f)
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
    (val_fraction, seed). Unreadable videos are skipped and counted (genie.data.clips.usable_videos). An
    `out` (a local folder or an object-store prefix, s3://bucket/prefix) that already holds a finished pack is
    refused unless `overwrite`. A killed pack resumes, locally or in the store: run with the same arguments on the
    same files, the finished split is kept and the other continues from its last finished chunks (litdata's
    `use_checkpoint`); with other settings or files it is packed again from the start. Every shard is checked
    against its index.json once written (litdata logs a failed upload and goes on). Raises DataError for an
    unusable `src`, an existing `out` or a shard that did not arrive.
    """
    from litdata import optimize  # lazy: only packing and packed training need litdata

    _quiet_litdata()
    src, out = Path(local_path(src)), local_path(out)
    folder = out = out.removeprefix("local:")  # local:/path is a read-side stand-in for an object store
    if is_uri(out) and not out.startswith(WRITE_PREFIXES):
        raise DataError(f"{out}: litdata writes only to a local folder, s3:// or gs://; pack there and copy")
    if is_uri(out) and not out.split("://", 1)[1].strip("/").count("/"):
        raise DataError(f"{out}: name a prefix inside the bucket, e.g. {out.rstrip('/')}/coinrun")
    fs = _filesystem(out)  # before hours of packing, not at the manifest
    if fs.exists(_join(out, PACK_FILE)) and not overwrite:
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
    resume = not overwrite and _partial(fs, folder) == intent
    if fs.exists(folder) and fs.ls(folder) and not resume:
        ours = any(fs.exists(_join(folder, name)) for name in (PACK_FILE, PARTIAL_FILE))
        if not ours and not overwrite:
            raise DataError(f"{out}: a folder that is not a packed dataset; pick an empty or new OUT")
        if fs.exists(_join(folder, PARTIAL_FILE)) and not overwrite:
            log.warning("%s: a killed pack of other settings or files; packing again from the start", out)
        fs.rm(folder, recursive=True)  # a finished pack with --overwrite, or a killed pack that cannot be resumed
        fs.invalidate_cache()
    fs.makedirs(folder, exist_ok=True)
    with fs.open(_join(folder, PARTIAL_FILE), "w") as f:
        f.write(json.dumps(intent, indent=1))
    started = time.perf_counter()
    for split, (clips, entry) in plan.items():
        done = fs.isfile(_join(_join(folder, split), "index.json"))
        if resume:
            log.info("%s/%s: %s", out, split, "already packed" if done else "resuming the killed pack")
        if len(clips) and not (resume and done):
            if resume:
                _trim_checkpoints(fs, _join(folder, split))
            optimize(
                fn=_ClipWriter(clips),
                inputs=list(range(len(clips))),
                output_dir=_join(out, split),
                num_workers=max(1, min(num_workers, len(clips))),
                chunk_bytes=chunk_bytes,
                reorder_files=False,
                start_method="fork",
                use_checkpoint=True,  # a killed pack resumes from its last finished chunks
                # in a store, litdata (0.2.76) takes any non-empty prefix for a finished split (its index check
                # reads a bool as an exception) and refuses to resume; "append" skips that check and, with no
                # index.json there yet, numbers the chunks from 0 as the killed run did
                mode="append" if resume and is_uri(folder) else None,
            )
            fs.invalidate_cache()  # litdata wrote past fsspec's listing cache
        if len(clips):
            check_shards(_join(folder, split))  # litdata logs a failed upload and goes on
        manifest["splits"][split] = entry
    manifest["pack_seconds"] = round(time.perf_counter() - started, 1)
    _write_manifest(out, manifest)
    fs.rm(_join(folder, PARTIAL_FILE))
    return manifest


def _trim_checkpoints(fs, split_dir: str) -> None:
    """Cut each litdata worker checkpoint of a killed pack's split back to the chunks that `split_dir` holds.

    litdata (0.2.76) uploads a worker's checkpoint beside its chunks, not after them, so a pack killed while
    writing to a store can leave a checkpoint naming chunks that never arrived; resuming from it would skip
    their clips (seen in tests/test_packed.py: checkpoints naming 10 and 11 chunks beside 4 uploaded). One input
    is one clip here (_ClipWriter), so the inputs done are the clips of the chunks kept. A checkpoint of another
    shape is removed, and its worker starts its share again."""
    chunk_name = re.compile(r"chunk-\d+-(\d+)\.bin")
    held = {Path(name).name for name in fs.ls(split_dir, detail=False)} if fs.exists(split_dir) else set()
    for path in fs.glob(_join(_join(split_dir, ".checkpoints"), "checkpoint-*.json")):
        try:
            with fs.open(path, "r") as f:
                state = json.load(f)
            kept = []
            for chunk in state["chunks"]:
                if chunk["filename"] not in held:
                    break
                kept.append(chunk)
            if len(kept) == len(state["chunks"]):
                continue
            done = sum(int(chunk["chunk_size"]) for chunk in kept)
            after = int(chunk_name.fullmatch(kept[-1]["filename"]).group(1)) + 1 if kept else 0
        except (KeyError, TypeError, ValueError, AttributeError):
            fs.rm(path)
            continue
        log.warning(
            "%s: its checkpoint names %d chunks, %d of them written; resuming after those",
            path,
            len(state["chunks"]),
            len(kept),
        )
        state.update(chunks=kept, inputs_done=done, samples_written=done, done_till_index=done, next_chunk_index=after)
        with fs.open(path, "w") as f:
            json.dump(state, f)


def _filesystem(path: str):
    """The fsspec filesystem `path` lives on: the local one, or the object store's (_store_filesystem)."""
    import fsspec

    return _store_filesystem(path) if is_uri(path) else fsspec.filesystem("file")


def _partial(fs, folder: str) -> dict | None:
    """The settings a killed pack of `folder` was started with (its genie_pack.partial.json), or None."""
    try:
        with fs.open(_join(folder, PARTIAL_FILE), "r") as f:
            return json.load(f)
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
    out = str(out).removeprefix("local:")
    fs, final = _filesystem(out), _join(out, PACK_FILE)
    # an object's put is atomic; a local file is written beside and renamed into place
    tmp = final if is_uri(out) else final + ".tmp"
    with fs.open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=1))
    if tmp != final:
        fs.mv(tmp, final)


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
    """Raise DataError naming the first chunk of a packed split (a local folder or an object-store prefix) that is
    missing or truncated (its size differs from what index.json records), so a damaged or never uploaded shard is
    a one-line error instead of a hang or a decoding failure deep in a worker. One listing of the split; a
    `local:` split is checked as the local folder it is."""
    split_dir = str(split_dir).removeprefix("local:")
    fs = _filesystem(split_dir)
    index = _join(split_dir, "index.json")
    try:
        with fs.open(index, "r") as f:
            chunks = json.load(f)["chunks"]
    except FileNotFoundError:
        raise DataError(f"{index}: not found; the packed split is incomplete, pack it again with --overwrite") from None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{index}: unreadable ({type(e).__name__}); pack it again with --overwrite") from None
    sizes = {Path(e["name"]).name: e["size"] for e in fs.ls(split_dir, detail=True) if e["type"] == "file"}
    for chunk in chunks:
        path, size = _join(split_dir, chunk["filename"]), sizes.get(chunk["filename"])
        if size is None:
            raise DataError(f"{path}: shard missing; pack the dataset again with --overwrite")
        if size != chunk["chunk_bytes"]:
            raise DataError(
                f"{path}: shard truncated or damaged ({size} bytes, index.json records "
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
