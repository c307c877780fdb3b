"""Frames a second into the training step, and disk use, for the three ways a stage can read one video folder:
(a) decoding the videos (decord in DataLoader workers), (b) the frame cache (`data.frame_cache: true`,
genie/data/frame_cache.py), (c) a packed dataset (`genie data pack`, litdata shards, genie/data/packed.py).

    python scripts/pack_bench.py --data data/coinrun --config configs/coinrun/tokenizer.yaml \
        --out docs/bench/pack_bench.json

Each is timed through the stage's own VideoDataModule.train_dataloader (the same workers, batch size, clip
length and resolution as the config), after one warm-up batch; the frame cache's build time and the pack's
time are reported beside. Run it on an otherwise idle machine: the workers compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from genie.config import DataConfig, load_yaml
from genie.data.datamodule import VideoDataModule
from genie.data.packed import pack, pack_settings


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def video_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.suffix in (".mp4", ".avi", ".mkv", ".webm"))


def frames_per_s(cfg: DataConfig, run_dir: Path | None, batches: int) -> float:
    dm = VideoDataModule(cfg, run_dir=run_dir)
    it = iter(dm.train_dataloader())
    next(it)  # workers started, first chunk read
    start, frames = time.perf_counter(), 0
    for _ in range(batches):
        frames += next(it)["video"].shape[0] * cfg.seq_len
    return round(frames / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a video folder")
    parser.add_argument("--config", default="configs/coinrun/tokenizer.yaml", help="stage YAML: its data: section")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    section = load_yaml(args.config).get("data") or {}
    fields = {k: v for k, v in section.items() if k in DataConfig.__dataclass_fields__ and k != "frame_cache"}
    cfg = DataConfig(**{**fields, "dir": args.data})
    if args.workers is not None:
        cfg = replace(cfg, num_workers=args.workers)
    work = Path(tempfile.mkdtemp(prefix="pack_bench_"))
    try:
        result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count()}
        result["config"] = {k: getattr(cfg, k) for k in ("seq_len", "resolution", "batch_size", "num_workers")}
        result["videos_bytes"] = video_bytes(Path(args.data))
        result["decode_frames_per_s"] = frames_per_s(cfg, None, args.batches)

        started = time.perf_counter()
        cached = replace(cfg, frame_cache=True)
        VideoDataModule(cached, run_dir=work / "run").setup()
        result["frame_cache_build_s"] = round(time.perf_counter() - started, 1)
        result["frame_cache_bytes"] = disk_bytes(work / "run" / "frame_cache")
        result["frame_cache_frames_per_s"] = frames_per_s(cached, work / "run", args.batches)

        started = time.perf_counter()
        pack(args.data, work / "pack", num_workers=max(1, cfg.num_workers), **pack_settings(cfg))
        result["pack_s"] = round(time.perf_counter() - started, 1)
        result["pack_bytes"] = disk_bytes(work / "pack")
        result["packed_frames_per_s"] = frames_per_s(replace(cfg, dir=str(work / "pack")), None, args.batches)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
