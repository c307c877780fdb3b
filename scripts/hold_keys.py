"""Look at control: hold each named key (or each latent code) for N frames from one prompt frame, one row each.

    .venv/bin/python scripts/hold_keys.py --model models/sprites-world.pt \
        --prompt data/sprites-heldout/episode_00005.mp4 --frames 10 --out docs/images/sprites_hold_keys.png \
        [--codes] [--gif out.gif]

Row 0 is the prompt frame repeated (what standing still looks like); each further row holds one key (named from the
bundle's action map, as `genie play` binds them) or, with --codes, one latent code. --gif writes one GIF of
the sequence right x N, left x N, jump x N (the sprite world's up) from the same prompt frame. Each row's start and
end player position is printed for sprite-world bundles, and for other games the scene's summed global shift
(dy, dx) px over the row (genie.control.transition_motion: dx > 0 is content moving right, the camera following
the player left; dy > 0 content moving down, the camera rising), so the motion can be read off as well as seen.
--start picks the prompt frame (default 0; a CoinRun level starts against its left wall, where left does nothing).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from genie.control import named_keys, transition_motion
from genie.data.video import contact_sheet, read_video, write_image, write_video
from genie.metrics import player_position
from genie.models.actionmap import ActionMap
from genie.models.world import WorldModel


def hold(world: WorldModel, prompt: np.ndarray, actions: list[int], seed: int = 0) -> np.ndarray:
    """uint8 prompt frame (H, W, 3), one latent action per generated frame -> uint8 frames (1 + len, H, W, 3)."""
    world.reset(prompt[None, None], seed=seed)
    frames = [prompt]
    for a in actions:
        out = world.step_float(torch.tensor([a]))[0]
        frames.append((out.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="world-model bundle")
    parser.add_argument("--prompt", required=True, help="a video whose first frame is the prompt")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--out", required=True, help="PNG contact sheet")
    parser.add_argument("--codes", action="store_true", help="one row per latent code instead of per named key")
    parser.add_argument("--gif", help="also a GIF: right, left, then jump, each held --frames frames")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--start", type=int, default=0, help="the prompt's frame index in the video")
    args = parser.parse_args()
    world = WorldModel.load(args.model)
    prompt = read_video(args.prompt, world.resolution, max_frames=args.start + 1, fit=world.fit)[-1]
    action_map = ActionMap.from_meta(world.meta)
    names = action_map.names if action_map is not None else []
    keys = {name: code for name, (code, _) in named_keys(action_map, names).items()}
    rows = {f"code {c}": c for c in range(world.num_actions)} if args.codes else keys
    if not rows:
        raise SystemExit(f"{args.model}: no action map names its codes; use --codes")
    sheet = [np.repeat(prompt[None], args.frames + 1, 0)]
    for name, code in rows.items():
        clip = hold(world, prompt, [code] * args.frames)
        sheet.append(clip)
        f = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
        pos, present = player_position(f[[0, -1]])
        if bool(present.all()):
            where = f"player {pos[0].tolist()} -> {pos[1].tolist()}"
        else:
            dy, dx = transition_motion(f[None], "scene")[0].nansum(0).tolist()
            where = f"scene shift ({dy:+.1f}, {dx:+.1f}) px"
        print(f"row {len(sheet) - 1}: {name} (code {code}) {where}")
    image = contact_sheet(np.stack(sheet))
    write_image(args.out, image.repeat(args.scale, 0).repeat(args.scale, 1))
    print(f"wrote {args.out}")
    if args.gif:
        order = [k for k in ("right", "left", "jump") if k in keys]
        actions = [keys[k] for k in order for _ in range(args.frames)]
        clip = hold(world, prompt, actions)
        write_video(args.gif, clip.repeat(args.scale * 2, 1).repeat(args.scale * 2, 2), fps=6)
        print(f"wrote {args.gif}: " + ", ".join(f"{k} x {args.frames}" for k in order))


if __name__ == "__main__":
    main()
