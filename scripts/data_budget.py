"""Is video decoding fast enough to feed the GPU? Compares what each training stage would consume with what
the data path (decord in DataLoader workers) delivers.

    python scripts/data_budget.py --config configs/coinrun/genie.yaml --data data/coinrun \
        --out docs/bench/data_budget.json

Model FLOPs per training frame (forward + backward, matmuls and attention) are counted on the meta device,
so no weights are allocated and nothing runs; the frames per second a stage would consume follow for a
given MFU against the H100's measured bf16 peak. Decoding is timed here with 1 and 2 workers at the
config's resolution and clip length; the per-worker rate scales to the config's num_workers as long as
the machine has that many free cores (the lent GPU machine has 16). Reading clips from a frame cache
(`data.frame_cache: true`, genie/data/frame_cache.py) is timed with 1 worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from genie.bench import H100_BF16_TFLOPS, bench_decode, count_flops, models_from_config


def flops_per_frame(model: torch.nn.Module, loss_fn, seq_len: int, resolution: int) -> float:
    model = model.to("meta").eval()  # eval: the quantiser skips its usage bookkeeping, the FLOPs are the same
    video = torch.zeros(1, seq_len, 3, resolution, resolution, device="meta")

    def step():
        loss_fn(model, video).backward()

    return count_flops(step) / seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/coinrun/genie.yaml")
    parser.add_argument("--data", required=True, help="a dataset folder at (or above) the config's resolution")
    parser.add_argument("--mfu", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    tokenizer, lam, _, cfgs = models_from_config(args.config)
    data = cfgs["tokenizer"].data
    seq_len, resolution, workers = data.seq_len, data.resolution, data.num_workers

    def loss(m, video):  # reconstruction / prediction + VQ: one forward and one backward
        out, _, vq = m(video)
        return out.float().mean() + vq

    per_frame = {
        name: flops_per_frame(model, loss, seq_len, resolution)
        for name, model in (("tokenizer", tokenizer), ("lam", lam))
    }
    decode = {
        w: bench_decode(args.data, seq_len, resolution, batch_size=data.batch_size, workers=w, batches=30)[
            "decode_frames_per_s"
        ]
        for w in (1, 2)
    }
    with tempfile.TemporaryDirectory() as tmp:
        cached = bench_decode(
            args.data,
            seq_len,
            resolution,
            batch_size=data.batch_size,
            workers=1,
            batches=30,
            frame_cache_dir=Path(tmp) / "frame_cache",
        )["decode_frames_per_s"]
    result = {
        "config": args.config,
        "data": args.data,
        "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
        "seq_len": seq_len,
        "resolution": resolution,
        "config_workers": workers,
        "decode_frames_per_s": {str(w): v for w, v in decode.items()},
        "decode_per_worker_x_config_workers": round(decode[1] * workers, 1),
        "frame_cache_frames_per_s_1_worker": cached,
        "peak_tflops": H100_BF16_TFLOPS,
        "stages": {},
    }
    print(
        f"decode: {decode[1]:.0f} frames/s with 1 worker, {decode[2]:.0f} with 2 ({resolution}x{resolution}, "
        f"{seq_len}-frame clips); x{workers} workers ~ {decode[1] * workers:.0f} frames/s; "
        f"from the frame cache: {cached:.0f} frames/s with 1 worker"
    )
    for stage, flops in per_frame.items():
        need = {str(m): round(m * H100_BF16_TFLOPS * 1e12 / flops, 1) for m in args.mfu}
        result["stages"][stage] = {"gflops_per_frame": round(flops / 1e9, 3), "frames_per_s_at_mfu": need}
        print(
            f"{stage:10s} {flops / 1e9:8.2f} GFLOP a training frame; at MFU "
            + ", ".join(f"{float(m):.0%}: {v:,.0f} frames/s" for m, v in need.items())
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
