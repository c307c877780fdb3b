"""`genie eval`: every metric the data allows, for a world-model bundle on a video folder.

By default only the held-out files are scored: the `val` split of the folder, by the same deterministic
file split training used (the bundle's meta["training"]); `--split all` scores every file (a folder of
other levels), `--split train` the training files. The summary says how many scored files the model
was trained on.

Keys in metrics.json, each a mean over clips with `<key>_ci95` = [low, high], its 95 % percentile-bootstrap
interval over clips: `recon_psnr`, `recon_ssim` (tokenizer, over its window), `lam_psnr`, `delta_t_psnr`
(Genie's controllability at t = --horizon), `rollout_psnr@k` for k = 1, 4, 8, 16 (generated from the first
frame with the clip's inferred latent actions; the context window slides as in play), `copy_psnr@k` (the no-model
baseline: the first frame repeated, against real frame k; a world model that does not beat it at a horizon has
learned nothing there that standing still does not give), `rollout_gain_psnr@k` (rollout_psnr@k minus copy_psnr@k,
clip by clip: its interval says whether the model beats standing still); on the sprite world
`player_pos_error@k` (pixels, clips where the player is still drawn), `player_present@k` and
`player_within_2px@k` (fractions of clips). Without intervals: `codebook_usage`, `codebook_perplexity`,
`lam_codebook_*`, and with ground-truth sidecars `action_nmi`, `action_probe_acc`, `idm_ceiling_acc` and
the action-map scores of genie.scoring.action_scores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from genie.config import ConfigError
from genie.control import KEY_NAMES
from genie.data.clips import VideoClips
from genie.data.heldout import select_videos
from genie.metrics import bootstrap_interval, codebook_stats, player_position, psnr, ssim
from genie.models.pixels import video_to_float
from genie.models.resolution import DEFAULT_FIT
from genie.models.world import WorldModel, resolve_device, span_frames
from genie.persistence import persistence_command
from genie.scoring import action_scores

ROLLOUT_KS = (1, 4, 8, 16)


def is_sprite_world(data_dir: str | Path) -> bool:
    """True when `data_dir` was written by `genie data sprites` (its dataset.json says so)."""
    info = Path(data_dir) / "dataset.json"
    try:
        return json.loads(info.read_text()).get("generator") == "sprites"
    except (OSError, ValueError):
        return False


@torch.no_grad()
def rollout_frames(world: WorldModel, first: torch.Tensor, actions: torch.Tensor, seed: int) -> torch.Tensor:
    """Generate len(actions) frames after the uint8 first frames (B, H, W, 3) with latent actions (B, N), through
    the environment API (play's sliding context and streamed decoding): float (B, N, 3, H, W)."""
    world.reset(first[:, None].numpy(), seed=seed)
    return torch.stack([world.step_float(actions[:, n]) for n in range(actions.shape[1])], 1)


def summarise(values: dict[str, list], groups: np.ndarray, seed: int = 0) -> dict:
    """Per-clip values -> {key: mean, key_ci95: [low, high]} with the interval of a bootstrap over the videos
    `groups` (N,) the clips come from; keys without finite values are left out."""
    out = {}
    for key, parts in values.items():
        x = (
            torch.cat([torch.as_tensor(p, dtype=torch.float64).flatten() for p in parts]).numpy()
            if parts
            else np.array([])
        )
        if not np.isfinite(x).any():
            continue
        out[key] = float(x[np.isfinite(x)].mean())
        out[f"{key}_ci95"] = list(bootstrap_interval(x, groups=groups[: len(x)], seed=seed))
    return out


def json_safe(value):
    """nan and inf -> None (JSON has no NaN), recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@torch.no_grad()
def evaluate(
    world: WorldModel,
    data_dir: str | Path,
    split: str = "val",
    max_clips: int = 64,
    horizon: int = 4,
    rollout_frames_k: int = 16,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    control_frames: int = 10,
    control_prompts: int = 24,
) -> dict:
    """Score `world` on clips of the `split` files of `data_dir` (see the module docstring for the keys).

    The control measure (genie/control.py) holds each latent code `control_frames` frames from one prompt frame of
    each of up to `control_prompts` scored videos; control_frames=0 leaves it out.

    Clips are 1 + max(horizon, rollout_frames_k) frames; shorter videos are skipped. Raises ConfigError for
    a horizon < 1 or an unknown split, genie.data.clips.DataError when no video is long enough.
    """
    from tqdm import tqdm

    if horizon < 1:
        raise ConfigError(f"--horizon must be at least 1, got {horizon}")
    if max_clips < 1:
        raise ConfigError(f"--max-clips must be at least 1, got {max_clips}")
    length = 1 + max(horizon, rollout_frames_k)
    stride = getattr(world, "frame_stride", 1)  # video frames a world step spans
    record = world.meta.get("training")
    videos, num_seen = select_videos(data_dir, split, span_frames(length, stride), record, progress=progress)
    clips = VideoClips(
        videos, length, world.resolution, stride, max_clips=max_clips, fit=getattr(world, "fit", DEFAULT_FIT)
    )
    loader = torch.utils.data.DataLoader(clips, batch_size=batch_size)
    sprites = is_sprite_world(data_dir)
    random_gen = torch.Generator().manual_seed(seed)
    values: dict[str, list] = {k: [] for k in ("recon_psnr", "recon_ssim", "lam_psnr", "delta_t_psnr")}
    rollout_keys = ("rollout_psnr", "copy_psnr", "rollout_gain_psnr")
    values.update({f"{name}@{k}": [] for name in rollout_keys for k in ROLLOUT_KS if k < length})
    if sprites:
        for k in ROLLOUT_KS:
            if k < length:
                values.update({f"player_pos_error@{k}": [], f"player_present@{k}": [], f"player_within_2px@{k}": []})
    token_ids, lam_ids, truths = [], [], []
    tok_window, lam_window = world.tokenizer.cfg.max_frames, world.lam.cfg.max_frames
    for index, batch in enumerate(tqdm(loader, desc="evaluating", unit="batch", disable=not progress)):
        frames = batch["video"]  # uint8 (B, L, H, W, 3)
        video = video_to_float(frames).to(world.device)  # (B, L, 3, H, W)
        ids = world.tokenizer.encode(video[:, :tok_window])
        recon = world.tokenizer.decode(ids).clamp(0, 1)
        values["recon_psnr"].append(psnr(recon, video[:, :tok_window]).mean(1).cpu())
        values["recon_ssim"].append(ssim(recon, video[:, :tok_window]).mean(1).cpu())
        token_ids.append(ids.cpu().flatten())
        pred, _, _ = world.lam(video[:, :lam_window])
        values["lam_psnr"].append(psnr(pred, video[:, 1:lam_window]).mean(1).cpu())
        actions = world.lam.infer_actions(video)  # (B, L-1)
        lam_ids.append(actions.cpu())
        truths.append(batch["actions"])

        generated = rollout_frames(world, frames[:, 0], actions, seed + index)  # (B, L-1, 3, H, W)
        per_frame = psnr(generated, video[:, 1:]).cpu()  # (B, L-1)
        copied = psnr(video[:, :1].expand_as(video[:, 1:]), video[:, 1:]).cpu()  # (B, L-1): the first frame repeated
        random_actions = torch.randint(0, world.num_actions, (len(frames), horizon), generator=random_gen).to(
            world.device
        )
        randomised = rollout_frames(world, frames[:, 0], random_actions, seed + index)
        values["delta_t_psnr"].append(per_frame[:, horizon - 1] - psnr(randomised[:, -1], video[:, horizon]).cpu())
        for k in ROLLOUT_KS:
            if k < length:
                values[f"rollout_psnr@{k}"].append(per_frame[:, k - 1])
                values[f"copy_psnr@{k}"].append(copied[:, k - 1])
                values[f"rollout_gain_psnr@{k}"].append(per_frame[:, k - 1] - copied[:, k - 1])
        if sprites:
            real_pos, _ = player_position(video[:, 1:].cpu())
            fake_pos, found = player_position(generated.cpu())
            error = (fake_pos - real_pos).norm(dim=-1)  # (B, L-1), nan where the player is gone
            for k in ROLLOUT_KS:
                if k < length:
                    values[f"player_pos_error@{k}"].append(error[:, k - 1])
                    values[f"player_present@{k}"].append(found[:, k - 1].float())
                    values[f"player_within_2px@{k}"].append((error[:, k - 1] <= 2).float())  # nan <= 2 is False

    # clips of one video are not independent: intervals resample videos (a cluster bootstrap)
    metrics = summarise(values, np.array([video for video, _ in clips.clips]), seed)
    metrics.update(codebook_stats(torch.cat(token_ids), world.tokenizer.num_codes))
    lam_stats = codebook_stats(torch.cat([a.flatten() for a in lam_ids]), world.num_actions)
    metrics.update({f"lam_{k}": v for k, v in lam_stats.items()})
    truth = torch.cat(truths).flatten().numpy()
    if (truth >= 0).sum() >= 8:
        # the probe, NMI and the inverse-dynamics ceiling on one split of up to 4096 labelled transitions of
        # the scored files, held-out half by episode (genie/scoring.py)
        metrics.update(action_scores(world, videos, seed=seed, progress=progress))
    if control_frames > 0:
        from genie.control import evaluate_control

        metrics.update(
            evaluate_control(world, videos, data_dir, control_frames, control_prompts, seed=seed, progress=progress)
        )
    metrics.update(
        {
            "num_clips": len(clips),
            "num_videos": len(videos),
            "split": split,
            "training_videos_scored": num_seen,
            "clip_frames": length,
            "horizon": horizon,
        }
    )
    return metrics


def _interval(metrics: dict, key: str) -> str:
    low, high = metrics.get(f"{key}_ci95") or (None, None)
    return f"[{low:7.3f}, {high:7.3f}]" if low is not None and np.isfinite(low) else ""


def verdict(metrics: dict) -> str:
    """Whether the actions control the world, in words: it takes both ΔtPSNR's 95 % interval above 0 (the
    inferred actions beat random ones, Genie's test) and the held keys moving the world as the game does
    (control_fidelity, genie/control.py: interval above 0.5), since a world that barely moves passes ΔtPSNR."""
    low = (metrics.get("delta_t_psnr_ci95") or [None])[0]
    dt = "delta_t_psnr" in metrics and low is not None and low > 0  # no interval: no evidence either
    if "control_fidelity" not in metrics:
        what = "ΔtPSNR above 0" if dt else "no evidence from ΔtPSNR"
        return f"not judged: no control measure ({what}; ΔtPSNR alone is passed by a world that does not move)"
    fid = metrics["control_fidelity"]
    fid_low = (metrics.get("control_fidelity_ci95") or [float("nan")])[0]
    source = metrics.get("control", {}).get("control_fidelity_from", "latent codes")
    moved = f"held {source} move the world {100 * fid:.0f} % of the way the game does"
    if dt and np.isfinite(fid_low) and fid_low >= 0.5:
        return f"actions control the world: {moved} (interval above 0.5) and ΔtPSNR's interval lies above 0"
    if fid >= 0.2:
        return f"actions move the world, but only partly: {moved}" + ("" if dt else "; ΔtPSNR's interval reaches 0")
    return f"actions do NOT control the world: {moved}" + (
        " (ΔtPSNR above 0 alone does not show control)" if dt else ""
    )


def summary(metrics: dict) -> str:
    """The human-readable report of `evaluate`'s metrics: one line a metric, with its 95 % interval."""
    seen = metrics.get("training_videos_scored", -1)
    where = f"the {metrics['split']} split: {metrics['num_videos']} videos" if metrics.get("split") else "the folder"
    lines = [f"evaluated {metrics['num_clips']} clips of {metrics['clip_frames']} frames from {where}"]
    if seen > 0:
        lines.append(f"  WARNING: {seen} of these videos were training videos: these scores are not held-out")
    elif seen < 0:
        lines.append("  (this bundle does not record its training files: held-out status unknown)")
    rows = [
        ("tokenizer", "recon_psnr", "dB"),
        ("", "recon_ssim", ""),
        ("", "codebook_usage", ""),
        ("", "codebook_perplexity", ""),
        ("LAM", "lam_psnr", "dB"),
        ("", "action_nmi", ""),
        ("", "action_probe_acc", ""),
        ("", "idm_ceiling_acc", ""),
        ("", "action_bundle_map_acc", ""),
        ("dynamics", "delta_t_psnr", "dB"),
    ]
    rows += [("", f"rollout_psnr@{k}", "dB") for k in ROLLOUT_KS]
    rows += [("no model" if k == 1 else "", f"copy_psnr@{k}", "dB") for k in ROLLOUT_KS]
    rows += [("vs copy" if k == 1 else "", f"rollout_gain_psnr@{k}", "dB") for k in ROLLOUT_KS]
    rows += [("player", f"player_pos_error@{k}", "px") for k in (1, 8, 16)]
    rows += [("", f"player_within_2px@{k}", "") for k in (8, 16)] + [("", f"player_present@{k}", "") for k in (8, 16)]
    for group, key, unit in rows:
        if key in metrics:
            lines.append(f"  {group:10s} {key:22s} {metrics[key]:8.3f} {unit:3s} {_interval(metrics, key)}")
    rows = [
        ("control", "control_fidelity", ""),
        ("", "code_fidelity", ""),
        ("", "key_fidelity", ""),
        *[("", f"key_fidelity/{name}", "") for name in KEY_NAMES],
        ("", "lr_opposite_rate", ""),
        ("", "jump_rise_rate", ""),
        ("", "code_purity", ""),
        ("", "moving_code_purity_min", ""),
    ]
    for group, key, unit in rows:
        if key in metrics:
            lines.append(f"  {group:10s} {key:22s} {metrics[key]:8.3f} {unit:3s} {_interval(metrics, key)}")
    if "control" in metrics and metrics["control"].get("keys"):
        keys = ", ".join(f"{name}={k['code']}" for name, k in metrics["control"]["keys"].items())
        lines.append(f"  keys held: {keys} (the codes genie play binds), {metrics['control']['frames']} frames each")
    lines.append(f"  verdict: {verdict(metrics)}")
    if "persistence" in metrics:
        p = metrics["persistence"]
        lines.append(
            f"  persistence: {p['steps']} random-action frames, latency p50 {p['latency_ms_p50']:.1f} ms, "
            f"p99 {p['latency_ms_p99']:.1f} ms; memory peak {p['memory_peak_mb']:.0f} MB, growth "
            f"{p['memory_growth_mb']:.1f} MB ({'flat' if p['memory_flat'] else 'GROWING'}); degenerate frames "
            f"{100 * p['degenerate_fraction']:.1f} % ({'COLLAPSED' if p['collapsed'] else 'no collapse'})"
        )
    return "\n".join(lines)


def eval_command(args) -> None:
    """`genie eval`: evaluate, write metrics.json (and with --persistence the persistence JSON and plot), print."""
    start = time.time()
    device = resolve_device(args.device)
    world = WorldModel.load(args.model, device=device)
    world.set_sampling(
        steps=getattr(args, "steps", None),
        temperature=getattr(args, "temperature", None),
        guidance=getattr(args, "guidance", None),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = evaluate(
        world,
        args.data,
        split=args.split,
        max_clips=args.max_clips,
        horizon=args.horizon,
        seed=args.seed,
        control_frames=getattr(args, "control_frames", 10),
        control_prompts=getattr(args, "control_prompts", 24),
    )
    metrics.update(
        {
            "model": str(args.model),
            "data": str(args.data),
            "device": str(device),
            "maskgit_steps": world.steps,
            "temperature": world.temperature,
            "guidance": world.dynamics.cfg.guidance,
        }
    )
    metrics = json_safe(metrics)
    metrics["seconds"] = round(time.time() - start, 1)
    out.write_text(json.dumps(metrics, indent=2))  # written before the persistence rollout, which can fail alone
    if getattr(args, "persistence", 0):
        if args.persistence < 2:
            raise ConfigError(f"--persistence needs at least 2 steps, got {args.persistence}")
        metrics["persistence"] = json_safe(
            persistence_command(world, args.data, args.split, out, steps=args.persistence, seed=args.seed)
        )
        metrics["seconds"] = round(time.time() - start, 1)
        out.write_text(json.dumps(metrics, indent=2))
    print(summary(metrics))
    print(f"metrics written to {out}")
