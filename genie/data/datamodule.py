"""The Lightning DataModule of a video folder: train/val clips split by file, the training clips from the
frame cache when data.frame_cache is on, and the resumable, rank-sharded clip stream."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from genie.config import DataConfig
from genie.data.clips import ClipStream, VideoClips, split_by_file, usable_videos
from genie.data.frame_cache import CachedClips, ensure_frame_cache
from genie.models.resolution import frame_size

log = logging.getLogger(__name__)


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

    def setup(self, stage: str | None = None) -> None:
        """Find the usable videos, split them by file into training and validation clips, and build (or reuse) the
        frame cache when configured; a no-op after the first call. Raises DataError when the data folder is
        missing or holds no usable video."""
        if self.train_set is not None:
            return
        cfg = self.cfg
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

    def train_sampler(self) -> ClipStream:
        """The resumable, rank-sharded stream of training clip indices."""
        self.setup()
        trainer = self.trainer
        # read at every iter(): after a resume (or at a new epoch) the stream continues from the current step
        return ClipStream(
            len(self.train_set),
            self.cfg.batch_size,
            seed=self.cfg.seed,
            start_step=(lambda: trainer.global_step) if trainer else 0,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )

    def train_dataloader(self) -> DataLoader:
        """Batches {"video": uint8 (B, T, H, W, 3), "actions": int64 (B, T-1), ...} of training clips, in the
        resumable, rank-sharded ClipStream order. Raises DataError as `setup`."""
        sampler = self.train_sampler()  # sets up the clips first
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        """Batches of validation clips in a fixed order, the same fields as `train_dataloader`. Raises DataError as
        `setup`."""
        self.setup()
        return self._loader(self.val_set)
