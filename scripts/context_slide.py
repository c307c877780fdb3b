"""The speed / quality trade of the rollout context window's slide (genie/models/sampling.py).

Replays whole episodes from their first frame with the actions the LAM infers from them, once for each
slide, and reports the mean time of a batched world.step and the PSNR of generated vs real frames over
the early frames (before the window first fills: identical for every slide) and the later ones.

    .venv/bin/python scripts/context_slide.py --model runs/demo/world_model.pt --data data/demo-sprites \
        --slides 1,2,4 --episodes 8 --out runs/context_slide.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from genie.data.clips import usable_videos
from genie.data.video import read_frames
from genie.inference import infer_actions
from genie.metrics import psnr
from genie.models.world import WorldModel


def replay(world: WorldModel, real: np.ndarray, actions: np.ndarray, slide: int, seed: int) -> tuple[np.ndarray, float]:
    """real uint8 (B, T, H, W, 3), actions (B, T-1) -> PSNR per generated frame (T-1,), mean seconds per step."""
    world.set_sampling(slide=slide)
    world.reset(real[:, :1], seed=seed)
    frames, seconds = [], []
    for t in range(actions.shape[1]):
        start = time.perf_counter()
        frames.append(world.step(actions[:, t].tolist()))
        seconds.append(time.perf_counter() - start)
    generated = torch.from_numpy(np.stack(frames, 1)).float().div(255)  # (B, T-1, H, W, 3)
    target = torch.from_numpy(real[:, 1:]).float().div(255)
    return psnr(generated, target).mean(0).numpy(), float(np.mean(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--slides", default="1,2,4")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="context_slide.json")
    args = parser.parse_args()

    world = WorldModel.load(args.model)
    window = world.dynamics.cfg.max_frames
    videos = usable_videos(args.data, min_frames=3 * window, progress=False)[: args.episodes]
    length = min(v.num_frames for v in videos)
    real = np.stack([read_frames(v.path, resolution=world.resolution)[:length] for v in videos])  # (B, T, H, W, 3)
    actions = np.stack([infer_actions(world.lam, clip) for clip in real])  # (B, T-1)
    rows = []
    for slide in (int(s) for s in args.slides.split(",")):
        per_frame, seconds = replay(world, real, actions, slide, args.seed)
        early, late = per_frame[: window - 1], per_frame[window - 1 :]
        rows.append(
            {
                "slide": slide,
                "step_ms": round(seconds * 1000, 1),
                "psnr_before_first_slide": round(float(early.mean()), 2),
                "psnr_after": round(float(late.mean()), 2),
                "psnr_per_frame": [round(float(p), 2) for p in per_frame],
            }
        )
        print(
            f"slide {slide}: {seconds * 1000:7.1f} ms per step of {len(videos)} worlds;  PSNR frames 1-{window - 1}: "
            f"{early.mean():.2f} dB, frames {window}-{length - 1}: {late.mean():.2f} dB"
        )
    result = {
        "model": args.model,
        "data": args.data,
        "episodes": len(videos),
        "frames": length,
        "window": window,
        "maskgit_steps": world.steps,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
