"""The Lightning DataModule of a video folder: train/val clips split by file, the training clips from the
frame cache when data.frame_cache is on, and the resumable, rank-sharded clip stream; or of a packed dataset
(genie/data/packed.py), streamed by litdata."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from genie.config import DataConfig
from genie.data.clips import ClipStream, VideoClips, split_by_file, usable_videos
from genie.data.frame_cache import CachedClips, ensure_frame_cache
from genie.data.packed import check_cut, is_packed, packed_split, read_manifest
from genie.models.resolution import frame_size

log = logging.getLogger(__name__)


class _Spread(Dataset):
    """At most `n` items of a map-style dataset, evenly spread over it (validation clips of a packed split, chosen
    as VideoClips' max_clips chooses them)."""

    def __init__(self, dataset, n: int | None):
        size = len(dataset)
        self.dataset = dataset
        self.keep = (
            list(range(size)) if n is None or size <= n else [int(k) for k in torch.linspace(0, size - 1, n).round()]
        )

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[self.keep[index]]


class VideoDataModule(L.LightningDataModule):
    """Train/val clips of a video folder, split by file, as docs/data.md describes."""

    def __init__(self, cfg: DataConfig, run_dir: str | Path | None = None):
        """With `run_dir` and `cfg.frame_cache`, training clips are read from `<run_dir>/frame_cache/`
        (genie/data/frame_cache.py)."""
        super().__init__()
        self.cfg = cfg
        self.frame_cache_dir = Path(run_dir) / "frame_cache" if run_dir is not None and cfg.frame_cache else None
        self.train_set: VideoClips | None = None
        self.val_set: VideoClips | None = None
        self.manifest: dict | None = None  # genie_pack.json of a packed data.dir

    def setup(self, stage: str | None = None) -> None:
        """Find the usable videos, split them by file into training and validation clips, and build (or reuse) the
        frame cache when configured; a no-op after the first call. Raises DataError when the data folder is
        missing or holds no usable video."""
        if self.train_set is not None:
            return
        cfg = self.cfg
        if is_packed(cfg.dir):
            return self._setup_packed()
        root = Path(cfg.dir)
        span = (cfg.seq_len - 1) * cfg.frame_stride + 1
        videos = usable_videos(root, min_frames=span, min_size=min(*frame_size(cfg.resolution), 8))
        train, val = split_by_file(videos, root, cfg.val_fraction, cfg.seed)
        self.train_set = VideoClips(train, cfg.seq_len, cfg.resolution, cfg.frame_stride, cfg.clip_step, fit=cfg.fit)
        self.val_set = VideoClips(
            val, cfg.seq_len, cfg.resolution, cfg.frame_stride, None, cfg.max_val_clips, fit=cfg.fit
        )
        if self.frame_cache_dir is not None:
            ensure_frame_cache(self.train_set, self.frame_cache_dir, num_workers=max(1, cfg.num_workers))
            self.train_set = CachedClips(self.train_set, self.frame_cache_dir)
        log.info(
            "%s: %d train clips from %d videos, %d val clips from %d videos",
            root,
            len(self.train_set),
            len(train),
            len(self.val_set),
            len(val),
        )

    def _setup_packed(self) -> None:
        cfg = self.cfg
        self.manifest = read_manifest(cfg.dir)
        check_cut(self.manifest, cfg, cfg.dir)
        if cfg.frame_cache:
            log.info("%s: a packed dataset; data.frame_cache is not needed and is ignored", cfg.dir)
        self.train_set = packed_split(cfg.dir, "train", shuffle=True, seed=cfg.seed, drop_last=True)
        self.val_set = _Spread(packed_split(cfg.dir, "val"), cfg.max_val_clips)
        log.info("%s: %d train clips, %d val clips (packed)", cfg.dir, len(self.train_set), len(self.val_set))

    def _loader(self, dataset: VideoClips, sampler: Sampler | None = None) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_sampler(self, num_clips: int | None = None) -> ClipStream:
        """The resumable, rank-sharded stream of training clip indices (over `num_clips`; default: the training
        set's)."""
        self.setup()
        trainer = self.trainer
        # read at every iter(): after a resume (or at a new epoch) the stream continues from the current step
        return ClipStream(
            len(self.train_set) if num_clips is None else num_clips,
            self.cfg.batch_size,
            seed=self.cfg.seed,
            start_step=(lambda: trainer.global_step) if trainer else 0,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )

    def train_dataloader(self) -> DataLoader:
        """Batches {"video": uint8 (B, T, H, W, 3), "actions": int64 (B, T-1), ...} of training clips, in the
        resumable, rank-sharded ClipStream order; from a packed data.dir, litdata's StreamingDataLoader. Raises
        DataError as `setup`."""
        self.setup()
        if self.manifest is not None:
            # litdata shuffles and splits the clips across ranks, nodes and workers; the loader's state (how far
            # each worker read) is saved in Lightning's checkpoints and restored on resume, mid-epoch
            from litdata import StreamingDataLoader

            workers = self.cfg.num_workers
            return StreamingDataLoader(
                self.train_set,
                batch_size=self.cfg.batch_size,
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=torch.cuda.is_available(),
            )
        sampler = self.train_sampler()  # sets up the clips first
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        """Batches of validation clips in a fixed order, the same fields as `train_dataloader`. Raises DataError as
        `setup`."""
        self.setup()
        return self._loader(self.val_set)
