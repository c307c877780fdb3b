"""`genie eval`: every metric of DESIGN.md that the data allows, for a world-model bundle on a video folder.

Keys in metrics.json: `recon_psnr`, `recon_ssim`, `codebook_usage`, `codebook_perplexity` (tokenizer),
`lam_psnr`, `lam_codebook_usage`, `lam_codebook_perplexity`, `delta_t_psnr` (at t = --horizon),
`rollout_psnr@k`, and with ground-truth sidecars `action_nmi`, `action_probe_acc`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie.data import VideoClips, usable_videos, video_to_float
from genie.metrics import codebook_stats, linear_probe_accuracy, normalized_mutual_info, psnr, ssim
from genie.sampling import rollout_video
from genie.world import WorldModel, resolve_device


def clip_length(world: WorldModel, horizon: int) -> int:
    """Long enough for rollout_psnr@8 and delta_t_psnr, short enough for every model's window."""
    limit = min(world.tokenizer.cfg.max_frames, world.lam.cfg.max_frames, world.dynamics.cfg.max_frames)
    return min(max(horizon + 1, 9), limit)


@torch.no_grad()
def evaluate(world: WorldModel, data_dir: str | Path, max_clips: int = 64, horizon: int = 4, batch_size: int = 8,
             seed: int = 0, progress: bool = True) -> dict:
    from tqdm import tqdm

    length = clip_length(world, horizon)
    if horizon >= length:
        raise ValueError(f"--horizon {horizon} needs clips of {horizon + 1} frames; this model's window is {length}")
    videos = usable_videos(data_dir, min_frames=length, progress=progress)
    clips = VideoClips(videos, length, world.resolution, max_clips=max_clips)
    loader = torch.utils.data.DataLoader(clips, batch_size=batch_size)
    generator = torch.Generator(device=world.device).manual_seed(seed)
    sums: dict[str, list] = {k: [] for k in ("recon_psnr", "recon_ssim", "lam_psnr", "delta_t_psnr")}
    rollout = []  # per-clip PSNR per generated frame, (N, length-1)
    token_ids, lam_ids, lam_features, truths = [], [], [], []
    for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress):
        video = video_to_float(batch["video"]).to(world.device)
        ids = world.tokenizer.encode(video)
        recon = world.tokenizer.decode(ids).clamp(0, 1)
        sums["recon_psnr"].append(psnr(recon, video).flatten())
        sums["recon_ssim"].append(ssim(recon, video).flatten())
        token_ids.append(ids.cpu())
        _, actions, _, z = world.lam.encode(video)
        pred, _, _ = world.lam(video)
        sums["lam_psnr"].append(psnr(pred, video[:, 1:]).flatten())
        lam_ids.append(actions.cpu())
        lam_features.append(z.float().cpu())
        truths.append(batch["actions"])
        flat_ids = rearrange(ids, "b t h w -> b t (h w)")
        inferred = rollout_video(world.tokenizer, world.dynamics, flat_ids, actions, 1, world.steps, world.temperature, generator)
        random_actions = torch.randint(0, world.num_actions, actions.shape, device=world.device, generator=generator)
        randomised = rollout_video(world.tokenizer, world.dynamics, flat_ids, random_actions, 1, world.steps, world.temperature, generator)
        per_frame = psnr(inferred[:, 1:], video[:, 1:])  # (B, length-1)
        rollout.append(per_frame.cpu())
        sums["delta_t_psnr"].append((per_frame[:, horizon - 1] - psnr(randomised[:, horizon], video[:, horizon])).cpu())

    metrics = {k: float(torch.cat(v).float().mean()) for k, v in sums.items()}
    rollout_all = torch.cat(rollout).mean(0)
    for k in (1, 4, 8):
        if k <= len(rollout_all):
            metrics[f"rollout_psnr@{k}"] = float(rollout_all[k - 1])
    metrics.update(codebook_stats(torch.cat([t.flatten() for t in token_ids]), world.tokenizer.num_codes))
    lam_stats = codebook_stats(torch.cat([a.flatten() for a in lam_ids]), world.num_actions)
    metrics.update({f"lam_{k}": v for k, v in lam_stats.items()})
    truth = torch.cat(truths).flatten().numpy()
    known = truth >= 0
    if known.sum() >= 8:
        latent = torch.cat([a.flatten() for a in lam_ids]).numpy()
        features = torch.cat(lam_features).reshape(len(truth), -1).numpy()
        metrics["action_nmi"] = normalized_mutual_info(latent[known], truth[known])
        metrics["action_probe_acc"] = linear_probe_accuracy(features[known], truth[known], seed=seed)
    metrics["num_clips"] = len(clips)
    metrics["clip_frames"] = length
    metrics["horizon"] = horizon
    return metrics


def summary(metrics: dict) -> str:
    lines = [f"evaluated {metrics['num_clips']} clips of {metrics['clip_frames']} frames"]
    rows = [("tokenizer", "recon_psnr", "dB"), ("", "recon_ssim", ""), ("", "codebook_usage", ""),
            ("LAM", "lam_psnr", "dB"), ("", "action_nmi", ""), ("", "action_probe_acc", ""),
            ("dynamics", "delta_t_psnr", "dB"), ("", "rollout_psnr@1", "dB"), ("", "rollout_psnr@4", "dB"), ("", "rollout_psnr@8", "dB")]
    for group, key, unit in rows:
        if key in metrics:
            lines.append(f"  {group:10s} {key:18s} {metrics[key]:8.3f} {unit}")
    if "delta_t_psnr" in metrics:
        verdict = "actions control the world" if metrics["delta_t_psnr"] > 0.1 else "actions barely change the generated frames"
        lines.append(f"  delta_t_psnr at t={metrics['horizon']}: {verdict}")
    return "\n".join(lines)


def eval_command(args) -> None:
    start = time.time()
    device = resolve_device(args.device)
    world = WorldModel.load(args.model, device=device)
    metrics = evaluate(world, args.data, max_clips=args.max_clips, horizon=args.horizon, seed=args.seed)
    metrics.update({"model": str(args.model), "data": str(args.data), "device": str(device),
                    "seconds": round(time.time() - start, 1)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(summary(metrics))
    print(f"metrics written to {out}")
