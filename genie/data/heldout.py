"""Which files a model was trained on, so that evaluation scores held-out files by default.

The bundle's meta["training"] records the training folder, the split settings and a fingerprint of
every training file; `select_videos` picks the `val`, `train` or `all` files of a folder by the same
deterministic split training used (genie.data.clips.split_by_file) and counts how many of the chosen files
the model saw in training, by fingerprint, so a renamed or copied training file is still caught.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from genie.config import ConfigError
from genie.data.clips import DataError, split_by_file, usable_videos

SPLITS = ("val", "train", "all")
_HEAD_BYTES = 1 << 20


def fingerprint(path: str | Path) -> str:
    """A short content digest (str of 16 hex digits): sha1 of a file's size and first MiB; for a folder of
    numbered images (a video too), of its files' names and sizes and the first file's head."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        digest = hashlib.sha1(repr([(p.name, p.stat().st_size) for p in files]).encode())
        head = files[0] if files else None
    else:
        digest = hashlib.sha1(str(path.stat().st_size).encode())
        head = path
    if head is not None:
        with open(head, "rb") as f:
            digest.update(f.read(_HEAD_BYTES))
    return digest.hexdigest()[:16]


def training_record(data_cfg, progress: bool = False) -> dict:
    """What a model trained with `data_cfg` (genie.config.DataConfig) saw: plain data for the bundle's meta.

    Keys: data_dir, val_fraction, seed, train_files (paths relative to data_dir), train_fingerprints.
    """
    from genie.data.datamodule import (
        VideoDataModule,
    )  # lazy: Lightning, which only training needs; eval imports this module
    from genie.data.packed import is_packed, read_manifest

    if is_packed(data_cfg.dir):
        manifest = read_manifest(data_cfg.dir)
        train = manifest["splits"]["train"]
        return {
            "data_dir": manifest["source"],
            "packed": str(data_cfg.dir),
            "val_fraction": manifest["val_fraction"],
            "seed": manifest["seed"],
            "train_files": train["files"],
            "train_fingerprints": train["fingerprints"],
        }
    root = Path(data_cfg.dir)
    datamodule = VideoDataModule(data_cfg)
    datamodule.setup()
    train = getattr(datamodule.train_set, "videos", None) or datamodule.train_set.clips.videos  # CachedClips wraps
    return {
        "data_dir": str(root),
        "val_fraction": data_cfg.val_fraction,
        "seed": data_cfg.seed,
        "train_files": [v.path.relative_to(root).as_posix() for v in train],
        "train_fingerprints": [fingerprint(v.path) for v in train],
    }


def select_videos(
    data_dir: str | Path, split: str, min_frames: int, record: dict | None, progress: bool = True
) -> tuple[list, int]:
    """The usable videos of `data_dir` in `split` ("val" | "train" | "all"), and how many of them are training files.

    With a record, "train" is the files whose fingerprints it lists and "val" every other file (all of a folder
    the model never saw); without one, the folder is split as training would (genie.data.clips.split_by_file with the
    default val_fraction and seed), the training files are unknown and the count is -1. Raises ConfigError for an
    unknown split and genie.data.clips.DataError when no video is usable.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(data_dir)
    videos = usable_videos(root, min_frames=min_frames, progress=progress)
    if not record or "train_fingerprints" not in record:
        if split != "all" and len(videos) > 1:
            train, val = split_by_file(videos, root, 0.1, 0)
            videos = val if split == "val" else train
        return videos, -1
    seen = set(record["train_fingerprints"])
    trained = [fingerprint(v.path) in seen for v in videos]
    if split != "all":
        videos = [v for v, t in zip(videos, trained) if t == (split == "train")]
        trained = [split == "train"] * len(videos)
    if not videos:
        raise DataError(f"{root}: no usable video of {min_frames}+ frames in the {split} split; try --split all")
    return videos, sum(trained)
