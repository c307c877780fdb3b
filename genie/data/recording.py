"""Writing generated episodes as a dataset folder: `episode_00000.mp4` + `episode_00000.actions.npy` +
`dataset.json`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from genie.data.video import VIDEO_EXTENSIONS, write_video


class DatasetExistsError(FileExistsError):
    pass


class EpisodeWriter:
    """Writes episodes into a new (or empty) folder; refuses to mix into an existing dataset unless
    `overwrite=True`, which first removes the old videos, sidecars and index."""

    def __init__(self, out: str | Path, meta: dict, fps: int = 10, overwrite: bool = False):
        self.out = Path(out)
        self.meta = meta
        self.fps = fps
        self.paths: list[Path] = []
        existing = [p for p in self.out.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS] if self.out.is_dir() else []
        if existing and not overwrite:
            raise DatasetExistsError(
                f"{self.out} already holds {len(existing)} videos; "
                "choose another --out or pass --overwrite to replace them"
            )
        if existing:
            for path in existing:
                path.unlink()
            for path in list(self.out.rglob("*.actions.npy")) + [
                self.out / "dataset.json",
                self.out / ".genie_index.json",
            ]:
                if path.is_file():
                    path.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(self.out).free < 100 * 2**20:
            raise OSError(f"{self.out}: less than 100 MiB of free disk space")

    def add(self, frames: np.ndarray, actions: np.ndarray) -> Path:
        """frames uint8 (T, H, W, 3), actions int64 (T-1,): the action taken between frame t and t+1."""
        if len(actions) != len(frames) - 1:
            raise ValueError(f"{len(frames)} frames need {len(frames) - 1} actions, got {len(actions)}")
        path = self.out / f"episode_{len(self.paths):05d}.mp4"
        write_video(path, frames, fps=self.fps)
        np.save(path.with_name(path.stem + ".actions.npy"), np.asarray(actions, dtype=np.int64))
        self.paths.append(path)
        return path

    @staticmethod
    def progress(iterable, name: str, enabled: bool = True):
        """`iterable` wrapped in a tqdm bar labelled "recording <name>" (a plain pass-through when not `enabled`)."""
        from tqdm import tqdm

        return tqdm(iterable, desc=f"recording {name}", unit="episode", disable=not enabled)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc) -> None:
        info = {
            **self.meta,
            "episodes": len(self.paths),
            "fps": self.fps,
            "video_quality": "H.264 RGB lossless (libx264rgb, crf 0)",
        }
        (self.out / "dataset.json").write_text(json.dumps(info, indent=2))
