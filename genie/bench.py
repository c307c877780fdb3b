"""`genie bench`: training throughput per stage, play speed, data decode speed and peak memory, as JSON.

Models are built at the sizes of a genie.yaml (fresh weights: speed does not depend on training) or
loaded from a bundle. Timings synchronise the device around each timed region only.
"""

from __future__ import annotations

import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie.config import ConfigError
from genie.data.clips import DataError, VideoClips, usable_videos
from genie.data.frame_cache import CachedClips, ensure_frame_cache
from genie.models.dynamics import DynamicsModel
from genie.models.lam import LatentActionModel
from genie.models.precision import autocast
from genie.models.resolution import DEFAULT_FIT, frame_size, json_resolution
from genie.models.tokenizer import VideoTokenizer
from genie.models.world import WorldModel, resolve_device
from genie.training.dynamics_stage import dynamics_loss, tokenize
from genie.training.lam_stage import lam_loss
from genie.training.pipeline import stage_configs
from genie.training.tokenizer_stage import tokenizer_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def models_from_config(config: str | Path):
    """Fresh tokenizer, LAM and dynamics models at the sizes of a genie.yaml, plus the data config."""

    _, cfgs = stage_configs(config)
    tokenizer = VideoTokenizer(cfgs["tokenizer"].model)
    lam = LatentActionModel(cfgs["lam"].model)
    dyn_cfg = cfgs["dynamics"].model
    dyn_cfg.num_codes, dyn_cfg.grid, dyn_cfg.num_actions = tokenizer.num_codes, tokenizer.grid, lam.cfg.num_actions
    return tokenizer, lam, DynamicsModel(dyn_cfg), cfgs


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (forward and backward as it runs them), counted by torch's FlopCounterMode.

    Counts matmuls and attention (the model FLOPs of MFU), not elementwise work.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def bench_train_step(
    name: str,
    model: torch.nn.Module,
    loss_fn,
    batch_size: int,
    seq_len: int,
    resolution,
    device: torch.device,
    dtype,
    steps: int = 10,
    warmup: int = 3,
    peak_tflops: float | None = None,
    compile: bool = False,
) -> dict:
    """Frames per second of forward + backward + AdamW on random clips (B, T, 3, H, W) at `resolution` (int or
    (H, W)), and the model FLOP rate.

    The timed loop has no host syncs: the device is synchronised once before and once after it.
    """
    model = model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda" or None)
    run_loss = torch.compile(loss_fn) if compile else loss_fn  # traces through the model; the first calls compile
    video = torch.rand(batch_size, seq_len, 3, *frame_size(resolution), device=device)

    def forward_backward(fn=run_loss):
        with autocast(device, dtype):
            loss = fn(model, video)
        loss.backward()

    def step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    flops = count_flops(lambda: forward_backward(loss_fn))  # counted on the eager model
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    row = {
        "stage": name,
        "params": sum(p.numel() for p in trainable),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "step_ms": round(seconds * 1000, 2),
        "train_frames_per_s": round(batch_size * seq_len / seconds, 1),
        "gflops_per_step": round(flops / 1e9, 2),
        "model_tflops_per_s": round(flops / seconds / 1e12, 4),
        "compiled": compile,
    }
    if peak_tflops:
        row["mfu"] = round(flops / seconds / 1e12 / peak_tflops, 4)
    return row


def bench_play(world: WorldModel, batch_size: int, frames: int | None = None, warmup: int | None = None) -> dict:
    """play_fps and play_latency_ms: reset from a 1-frame prompt, run past the first fill of the context
    window (and, compiled, past the compiles), then time `frames` single steps: two full window cycles
    by default, so the re-encodes of a sliding context are counted as often as they happen in play."""
    device = world.device
    window = world.dynamics.cfg.max_frames
    frames = frames or 2 * max(world.slide, 8)
    warmup = window if warmup is None else warmup
    prompt = torch.randint(0, 255, (batch_size, 1, *world.frame_size, 3), dtype=torch.uint8).numpy()
    world.reset(prompt, seed=0)
    for i in range(warmup):
        world.step([i % world.num_actions] * batch_size)
    _sync(device)
    latencies = []
    for i in range(frames):
        start = time.perf_counter()
        world.step([i % world.num_actions] * batch_size)
        _sync(device)
        latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000
    return {
        "batch_size": batch_size,
        "maskgit_steps": world.steps,
        "window": window,
        "slide": world.slide,
        "frames_timed": frames,
        "play_latency_ms": round(float(ms.mean()), 2),
        "play_latency_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "play_latency_max_ms": round(float(ms.max()), 2),
        "play_fps": round(batch_size / float(ms.mean()) * 1000, 2),
    }


def bench_decode(
    data_dir: str | Path,
    seq_len: int,
    resolution,
    batch_size: int = 16,
    workers: int = 2,
    batches: int = 20,
    frame_cache_dir: str | Path | None = None,
    fit: str = DEFAULT_FIT,
) -> dict:
    """decode_frames_per_s of the training data path (decord + DataLoader workers), or with `frame_cache_dir`
    of reading clips from a frame cache there (built first if missing; genie/data/frame_cache.py)."""

    videos = usable_videos(data_dir, min_frames=seq_len, progress=False)
    clips = VideoClips(videos, seq_len, resolution, clip_step=seq_len, fit=fit)
    if frame_cache_dir is not None:
        clips = CachedClips(clips, ensure_frame_cache(clips, frame_cache_dir, num_workers=workers, progress=False))
    loader = torch.utils.data.DataLoader(
        clips, batch_size=batch_size, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    it = iter(loader)
    next(it)  # workers started
    start, frames = time.perf_counter(), 0
    for _ in range(batches):
        try:
            frames += next(it)["video"].shape[0] * seq_len
        except StopIteration:
            break
    seconds = time.perf_counter() - start
    return {
        "decode_frames_per_s": round(frames / seconds, 1),
        "workers": workers,
        "resolution": json_resolution(resolution),
    }


# bf16 dense matmul rate measured on the lent H100 (8192^3, shared/GPU.md): the peak MFU is reported against
H100_BF16_TFLOPS = 788.0


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """ "auto" = bf16 autocast on CUDA, fp32 on the CPU; None means fp32 (no autocast)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if name not in ("fp32", "bf16"):
        raise ValueError(f"--dtype must be auto, fp32 or bf16, got {name!r}")
    return torch.bfloat16 if name == "bf16" else None


def run_bench(
    config: str | Path | None,
    model: str | Path | None,
    data: str | Path | None,
    device: torch.device,
    train_batch: int = 8,
    play_batches=(1, 8),
    peak_tflops: float | None = None,
    dtype_name: str = "auto",
    compile: bool = False,
    steps: int | None = None,
    slide: int | None = None,
    stages=None,
    data_workers: int = 2,
    on_row=None,
) -> dict:
    """All figures as one dict; `on_row(result, kind, row)` is called as each row finishes (kind: train, play, data)."""
    dtype = resolve_dtype(dtype_name, device)
    if peak_tflops is None and device.type == "cuda" and dtype == torch.bfloat16:
        peak_tflops = H100_BF16_TFLOPS  # a bf16 peak: no MFU is reported for fp32 unless --peak-tflops is given
    on_row = on_row or (lambda result, kind, row: None)
    result: dict = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "dtype": "bf16-autocast" if dtype else "fp32",
        "torch": torch.__version__,
        "compiled": compile,
    }
    if model:
        world = WorldModel.load(model, device=device)
        tokenizer, lam, dynamics = world.tokenizer, world.lam, world.dynamics
        seq_len = tokenizer.cfg.max_frames
    else:
        tokenizer, lam, dynamics, cfgs = models_from_config(config or "configs/sprites/genie.yaml")
        world = WorldModel(tokenizer, lam, dynamics, fit=cfgs["tokenizer"].data.fit).to(device)
        seq_len = cfgs["tokenizer"].data.seq_len
    resolution = tokenizer.cfg.resolution
    result["model"] = str(model or config or "configs/sprites/genie.yaml")
    result["params"] = {"tokenizer": _params(tokenizer), "lam": _params(lam), "dynamics": _params(dynamics)}

    # each stage's own training loss (genie.training.*_stage), as its training step calls it
    def tokenizer_step_loss(m, video):
        return tokenizer_loss(m, video)[0]

    def lam_step_loss(m, video):
        return lam_loss(m, video)[0]

    if stages is None or "dynamics" in stages:  # token ids as the token cache feeds them, encoded once
        with torch.no_grad():
            probe = torch.rand(train_batch, seq_len, 3, *frame_size(resolution), device=device)
            tokenizer.to(device).eval()
            fixed_ids = rearrange(tokenizer.encode(probe), "b t h w -> b t (h w)")
            fixed_actions = torch.randint(0, dynamics.cfg.num_actions, (train_batch, seq_len - 1), device=device)

    def dynamics_step_loss(m, video):
        return dynamics_loss(m, fixed_ids, fixed_actions)[0]  # the dynamics model alone

    tokenizer.to(device)
    lam.to(device)

    def dynamics_encode_loss(m, video):
        # the dynamics stage without the token cache: the frozen tokenizer and LAM encode every batch
        tokenizer.eval(), lam.eval()
        return dynamics_loss(m, *tokenize(tokenizer, lam, video))[0]

    all_stages = {
        "tokenizer": (tokenizer, tokenizer_step_loss),
        "lam": (lam, lam_step_loss),
        "dynamics": (dynamics, dynamics_step_loss),
        "dynamics+encode": (dynamics, dynamics_encode_loss),
    }
    result["train"] = []
    for name in all_stages if stages is None else stages:
        if name not in all_stages:
            raise ValueError(f"unknown stage {name!r} (choose from {', '.join(all_stages)})")
        module, loss_fn = all_stages[name]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = bench_train_step(
            name,
            module,
            loss_fn,
            train_batch,
            seq_len,
            resolution,
            device,
            dtype,
            peak_tflops=peak_tflops,
            compile=compile and name != "dynamics+encode",
        )
        if device.type == "cuda":
            row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["train"].append(row)
        if peak_tflops:
            result["peak_tflops"] = peak_tflops
        on_row(result, "train", row)
    world = world.to(device).eval()
    world.set_sampling(steps=steps, slide=slide)
    if compile:
        world.compile_sampling()
    with autocast(device, dtype):
        result["play"] = []
        for b in play_batches:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            row = bench_play(world, b)
            if device.type == "cuda":
                row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            result["play"].append(row)
            on_row(result, "play", row)
    if data:
        result["data"] = bench_decode(data, seq_len, resolution, workers=data_workers, fit=world.fit)
        try:
            with tempfile.TemporaryDirectory() as tmp:  # the same clips read from a frame cache (data.frame_cache)
                cached = bench_decode(
                    data,
                    seq_len,
                    resolution,
                    workers=data_workers,
                    frame_cache_dir=Path(tmp) / "frame_cache",
                    fit=world.fit,
                )
            result["data"]["frame_cache_frames_per_s"] = cached["decode_frames_per_s"]
        except (DataError, OSError) as e:  # no room for the cache in the temp folder: keep the decode figure
            result["data"]["frame_cache_frames_per_s"] = None
            result["data"]["frame_cache_error"] = str(e)
        on_row(result, "data", result["data"])
    if device.type == "cuda":
        result["peak_memory_mb"] = max(row["peak_memory_mb"] for row in result["train"] + result["play"])
    else:
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def bench_command(args) -> None:
    """`genie bench`: train-step, play and data-loading speeds of a bundle or config, printed per row and written
    as JSON to `args.out` (rewritten after each row). Raises ConfigError for an unknown stage or --dtype, a model
    or config that cannot be loaded, or a data folder that cannot be read."""
    device = resolve_device(args.device)
    stages = None if args.stages is None else [] if args.stages == "none" else [s for s in args.stages.split(",") if s]
    play_batches = tuple(int(b) for b in args.play_batches.split(",") if b)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def report(result: dict, kind: str, row: dict) -> None:
        # each row is printed and the JSON rewritten as soon as it is measured: a run cut short keeps what it has
        if kind == "train":
            mfu = f"  MFU {row['mfu']:.1%}" if "mfu" in row else ""
            print(
                f"train {row['stage']:15s} {row['params'] / 1e6:7.2f}M params  "
                f"{row['train_frames_per_s']:10.1f} frames/s  "
                f"{row['model_tflops_per_s'] * 1000:9.1f} GFLOP/s{mfu}",
                flush=True,
            )
        elif kind == "play":
            print(
                f"play  batch {row['batch_size']:3d}  {row['play_fps']:8.2f} frames/s  "
                f"{row['play_latency_ms']:8.2f} ms/step "
                f"(p50 {row['play_latency_p50_ms']:.2f}, max {row['play_latency_max_ms']:.2f}; "
                f"{row['maskgit_steps']} MaskGIT steps, "
                f"window {row['window']}, slide {row['slide']})",
                flush=True,
            )
        else:
            cached = row["frame_cache_frames_per_s"]
            print(
                f"data  decode {row['decode_frames_per_s']:.1f} frames/s, from a frame cache "
                f"{'-' if cached is None else f'{cached:.1f}'} frames/s ({row['workers']} workers)",
                flush=True,
            )
        out.write_text(json.dumps(result, indent=2))

    try:
        result = run_bench(
            args.config,
            args.model,
            args.data,
            device,
            train_batch=args.batch_size,
            play_batches=play_batches,
            peak_tflops=args.peak_tflops,
            dtype_name=args.dtype,
            compile=args.compile,
            steps=args.steps,
            slide=args.slide,
            stages=stages,
            data_workers=args.data_workers,
            on_row=report,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out.write_text(json.dumps(result, indent=2))
    print(f"{result['device']}, {result['dtype']}; written to {out}")
