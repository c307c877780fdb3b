"""Which files a model was trained on, so that evaluation scores held-out files by default.

The bundle's meta["training"] records the training folder, the split settings and a fingerprint of
every training file; `select_videos` picks the `val`, `train` or `all` files of a folder by the same
deterministic split training used (genie.data.split_by_file) and counts how many of the chosen files
the model saw in training, by fingerprint, so a renamed or copied training file is still caught.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SPLITS = ("val", "train", "all")
_HEAD_BYTES = 1 << 20


def fingerprint(path: str | Path) -> str:
    """sha1 of a file's size and first MiB: a short content digest, str of 16 hex digits."""
    path = Path(path)
    digest = hashlib.sha1(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(_HEAD_BYTES))
    return digest.hexdigest()[:16]


def training_record(data_cfg, progress: bool = False) -> dict:
    """What a model trained with `data_cfg` (genie.config.DataConfig) saw: plain data for the bundle's meta.

    Keys: data_dir, val_fraction, seed, train_files (paths relative to data_dir), train_fingerprints.
    """
    from genie.data import split_by_file, usable_videos

    root = Path(data_cfg.dir)
    videos = usable_videos(root, min_frames=data_cfg.seq_len, progress=progress)
    train, _ = split_by_file(videos, root, data_cfg.val_fraction, data_cfg.seed)
    return {"data_dir": str(root), "val_fraction": data_cfg.val_fraction, "seed": data_cfg.seed,
            "train_files": [v.path.relative_to(root).as_posix() for v in train],
            "train_fingerprints": [fingerprint(v.path) for v in train]}


def select_videos(data_dir: str | Path, split: str, min_frames: int, record: dict | None,
                  progress: bool = True) -> tuple[list, int]:
    """The usable videos of `data_dir` in `split` ("val" | "train" | "all"), and how many of them are training files.

    The split is the one training used (its val_fraction and seed from `record`, else the defaults).
    Without a record the training files are unknown and the count is -1. Raises ConfigError for an
    unknown split and genie.data.DataError when no video is usable.
    """
    from genie.data import split_by_file, usable_videos

    if split not in SPLITS:
        from genie.config import ConfigError

        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(data_dir)
    videos = usable_videos(root, min_frames=min_frames, progress=progress)
    record = record or {}
    if split != "all" and len(videos) > 1:
        train, val = split_by_file(videos, root, record.get("val_fraction", 0.1), record.get("seed", 0))
        videos = val if split == "val" else train
    if "train_fingerprints" not in record:
        return videos, -1
    seen = set(record["train_fingerprints"])
    return videos, sum(fingerprint(v.path) in seen for v in videos)
