"""`genie rollout`: play a bundle forward from a prompt with chosen, random or repeated latent actions,
or side by side against a real clip replayed with its own inferred actions."""

from __future__ import annotations

import numpy as np
import torch

from genie.config import ConfigError
from genie.video import read_frames, write_video
from genie.world import WorldModel, resolve_device


def parse_actions(args, num_actions: int) -> list[int]:
    """--actions 0,3,3,1 | --random N | --repeat A:N -> a list of action ids, each checked."""
    rng = np.random.default_rng(args.seed)
    if args.random is not None:
        actions = rng.integers(0, num_actions, size=args.random).tolist()
    elif args.repeat:
        try:
            action, count = (int(v) for v in args.repeat.split(":"))
        except ValueError:
            raise ConfigError(f"--repeat expects A:N (action A repeated N times), got {args.repeat!r}") from None
        actions = [action] * count
    elif args.actions:
        try:
            actions = [int(v) for v in args.actions.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise ConfigError(f"--actions expects comma-separated integers such as 0,3,3,1, got {args.actions!r}") from None
    else:
        actions = rng.integers(0, num_actions, size=16).tolist()
    bad = [a for a in actions if not 0 <= a < num_actions]
    if bad:
        raise ConfigError(f"latent action ids must be in 0..{num_actions - 1} for this model, got {bad}")
    if not actions:
        raise ConfigError("no actions given")
    return actions


def rollout(world: WorldModel, prompt: np.ndarray, actions: list[int], seed: int = 0) -> np.ndarray:
    """uint8 prompt frames (T, H, W, 3) and actions -> uint8 frames (1 + len(actions), R, R, 3)."""
    frames = [world.reset(prompt, seed=seed)[0]]
    for action in actions:
        frames.append(world.step([action])[0])
    return np.stack(frames)


def compare(world: WorldModel, clip: np.ndarray, prompt_frames: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Real clip vs its replay from the first `prompt_frames` frames with its own inferred actions."""
    from genie.inference import infer_actions

    video = world.to_float(clip)
    real = (video[0].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
    actions = infer_actions(world.lam, real, window=world.lam.cfg.max_frames)
    generated = rollout(world, real[:prompt_frames], actions[prompt_frames - 1 :], seed=seed)
    generated = np.concatenate([real[: prompt_frames - 1], generated]) if prompt_frames > 1 else generated
    return np.concatenate([real, generated], axis=2), actions


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    return frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames


def rollout_command(args) -> None:
    world = WorldModel.load(args.model, device=resolve_device(args.device))
    world.set_sampling(args.steps, args.temperature, args.slide)  # a bad value is a ConfigError
    clip = read_frames(args.prompt, resolution=world.resolution)
    if args.compare:
        if len(clip) < args.prompt_frames + 1:
            raise ConfigError(f"{args.prompt}: --compare needs a video longer than --prompt-frames ({args.prompt_frames})")
        frames, actions = compare(world, clip, args.prompt_frames, seed=args.seed)
        what = f"real (left) vs generated (right) with {len(actions)} inferred actions"
    else:
        actions = parse_actions(args, world.num_actions)
        frames = rollout(world, clip[-args.prompt_frames :], actions, seed=args.seed)
        what = f"{len(actions)} actions {actions if len(actions) <= 20 else str(actions[:20])[:-1] + ', ...]'}"
    out = write_video(args.out, upscale(frames, args.scale), fps=8, lossless=False)
    print(f"wrote {out}: {len(frames)} frames, {what}")
