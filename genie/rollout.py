"""`genie rollout`: play a bundle forward from a prompt with chosen, random or repeated latent actions,
or side by side against a real clip replayed with its own inferred actions."""

from __future__ import annotations

import numpy as np

from genie.config import ConfigError
from genie.data.video import read_frames, write_video
from genie.inference import infer_actions
from genie.models.actionmap import ActionMap
from genie.models.pixels import float_to_video
from genie.models.world import ActionError, WorldModel, resolve_device, span_frames, step_frames

ACTIONS_FORM = "comma-separated latent action ids such as 0,3,3,1"


def parse_actions(args, num_actions: int, action_map=None) -> list[int]:
    """--actions 0,3,3,1 | --random N | --repeat A:N -> a list of latent action ids, each checked.

    With an `action_map` (genie.models.actionmap.ActionMap, a bundle trained on labelled data) --actions also takes
    the game's action names (right,right,jump), each turned into the latent code that means it.
    """
    rng = np.random.default_rng(args.seed)
    if args.random is not None:
        actions = rng.integers(0, num_actions, size=args.random).tolist()
    elif args.repeat:
        try:
            action, count = (int(v) for v in args.repeat.split(":"))
        except ValueError:
            raise ConfigError(f"--repeat expects A:N (action A repeated N times), got {args.repeat!r}") from None
        actions = [action] * count
    elif args.actions is not None:
        form = (
            ACTIONS_FORM
            if action_map is None
            else f"{ACTIONS_FORM} or action names such as {','.join(action_map.known_names()[:3])}"
        )
        items = [v.strip() for v in args.actions.split(",")]
        if "" in items:
            raise ConfigError(f"--actions expects {form}, got {args.actions!r}")
        actions = [int(v) if v.lstrip("-").isdigit() else _named_action(v, action_map, form) for v in items]
    else:
        actions = rng.integers(0, num_actions, size=16).tolist()
    bad = [a for a in actions if not 0 <= a < num_actions]
    if bad:
        raise ConfigError(f"latent action ids must be in 0..{num_actions - 1} for this model, got {bad}")
    if not actions:
        raise ConfigError("no actions given")
    return actions


def _named_action(name: str, action_map, form: str) -> int:
    if action_map is None:
        raise ConfigError(
            f"--actions expects {form} (this model has no action names: its training data had no "
            f"true-action sidecars), got {name!r}"
        )
    try:
        return action_map.code_for(name)
    except ActionError as e:
        raise ConfigError(f"--actions: {e}") from None


def rollout(world: WorldModel, prompt: np.ndarray, actions: list[int], seed: int = 0) -> np.ndarray:
    """uint8 prompt frames (T, H, W, 3) of any size and actions -> uint8 frames (1 + len(actions), h, w, 3) at the
    model's resolution."""
    frames = [world.reset(prompt, seed=seed)[0]]
    for action in actions:
        frames.append(world.step([action])[0])
    return np.stack(frames)


def compare(world: WorldModel, clip: np.ndarray, prompt_frames: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Real clip vs its replay from the first `prompt_frames` frames with its own inferred actions."""
    video = world.to_float(clip)
    real = float_to_video(video[0]).numpy()
    actions = infer_actions(world.lam, real, fit=world.fit)
    generated = rollout(world, real[:prompt_frames], actions[prompt_frames - 1 :], seed=seed)
    generated = np.concatenate([real[: prompt_frames - 1], generated]) if prompt_frames > 1 else generated
    return np.concatenate([real, generated], axis=2), actions


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """uint8 frames (T, H, W, 3) -> (T, scale*H, scale*W, 3), each pixel repeated (nearest neighbour)."""
    return frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames


def rollout_command(args) -> None:
    """`genie rollout`: roll a bundle out from a prompt video's last `args.prompt_frames` frames with the given
    latent actions (or, with --compare, the real clip beside its replay from its own inferred actions) and
    write the frames, upscaled `args.scale` times, as a video to `args.out`. Raises ConfigError for bad
    sampling settings, actions or a prompt too short for --compare; RunError for a file that is not a bundle;
    VideoError for an unreadable prompt."""
    world = WorldModel.load(args.model, device=resolve_device(args.device))
    world.set_sampling(
        args.steps, args.temperature, args.slide, getattr(args, "guidance", None)
    )  # a bad value is a ConfigError
    # a plain rollout needs only the prompt's last frames: read_frames keeps no more than those in memory
    # a world trained every frame_stride-th frame steps that many video frames: its prompt frames are as far apart
    last = None if args.compare else span_frames(args.prompt_frames, world.frame_stride)
    clip = read_frames(args.prompt, resolution=world.resolution, last=last, fit=world.fit)
    clip = step_frames(clip, world.frame_stride, end=not args.compare)
    if args.compare:
        if len(clip) < args.prompt_frames + 1:
            raise ConfigError(
                f"{args.prompt}: --compare needs a video longer than --prompt-frames ({args.prompt_frames})"
            )
        frames, actions = compare(world, clip, args.prompt_frames, seed=args.seed)
        what = f"real (left) vs generated (right) with {len(actions)} inferred actions"
    else:
        action_map = ActionMap.from_meta(world.meta)
        actions = parse_actions(args, world.num_actions, action_map)
        frames = rollout(world, clip[-args.prompt_frames :], actions, seed=args.seed)
        what = f"{len(actions)} actions {actions if len(actions) <= 20 else str(actions[:20])[:-1] + ', ...]'}"
        if action_map is not None:
            names = action_map.code_names()
            what += f" ({', '.join(f'{c}={names[c]}' for c in sorted(set(actions)) if names[c] is not None)})"
    out = write_video(args.out, upscale(frames, args.scale), fps=8, lossless=False)
    print(f"wrote {out}: {len(frames)} frames, {what}")
