"""Token cache against packed tokens (issue 25): the dynamics stage's training clips read from its memory-mapped
token cache (genie/data/token_cache.py) or from the same ids and latent actions packed as litdata shards, as
`genie data pack` packs frames. Prints clips/s into a shuffled training loader for each and their disk use.

    python scripts/bench_token_pack.py RUN_DIR/token_cache [--batches 400 --batch-size 8 --workers 0]

The packed copy is written to a temporary folder (litdata `optimize`, one worker) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genie.data.token_cache import TokenClips


class _TokenWriter:
    """litdata `optimize` fn: cached clip n as a dict of numpy arrays."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir

    def __call__(self, index: int) -> dict:
        clips = TokenClips(self.cache_dir)
        return {"ids": np.asarray(clips.ids[index]), "latent_actions": np.asarray(clips.actions[index])}


def _as_tensors(item: dict) -> dict:
    return {
        "ids": torch.from_numpy(np.asarray(item["ids"], dtype=np.int64)),
        "latent_actions": torch.from_numpy(np.asarray(item["latent_actions"], dtype=np.int64)),
    }


def _rate(loader, batches: int) -> tuple[float, int]:
    """Clips/s over `batches` batches after 5 warm-up batches (the loader is cycled as needed)."""
    seen, it, start = 0, iter(loader), None
    for b in range(batches + 5):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        if b == 5:
            start = time.perf_counter()
        if b >= 5:
            seen += len(batch["ids"])
    return seen / (time.perf_counter() - start), seen


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", help="a dynamics run's token_cache folder")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for both")
    args = parser.parse_args()
    from litdata import StreamingDataLoader, StreamingDataset, optimize

    cache = Path(args.cache)
    clips = TokenClips(cache)
    cache_loader = torch.utils.data.DataLoader(
        clips, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True
    )
    cached_rate, seen = _rate(cache_loader, args.batches)
    out = Path(tempfile.mkdtemp(prefix="token_pack_"))
    try:
        started = time.perf_counter()
        optimize(
            fn=_TokenWriter(str(cache)),
            inputs=list(range(len(clips))),
            output_dir=str(out),
            num_workers=1,
            chunk_bytes="64MB",
            reorder_files=False,
            start_method="fork",
        )
        pack_seconds = time.perf_counter() - started
        stream = StreamingDataset(str(out), shuffle=True, seed=0, drop_last=True, transform=_as_tensors)
        pack_loader = StreamingDataLoader(stream, batch_size=args.batch_size, num_workers=args.workers)
        packed_rate, _ = _rate(pack_loader, args.batches)
        packed_bytes = _size(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    cache_bytes = sum((cache / name).stat().st_size for name in ("ids.npy", "actions.npy"))
    print(
        f"{len(clips)} clips of {tuple(clips.ids.shape[1:])} ids; {seen} clips timed, batch {args.batch_size}, "
        f"{args.workers} workers"
    )
    print(f"token cache (memory-mapped .npy): {cached_rate:10.0f} clips/s, {cache_bytes / 2**20:7.1f} MiB")
    print(
        f"packed tokens (litdata shards):   {packed_rate:10.0f} clips/s, {packed_bytes / 2**20:7.1f} MiB "
        f"(packed in {pack_seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
