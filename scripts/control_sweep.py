"""The control measure alone (genie/control.py) for one bundle at several sampling settings, one line each.

    .venv/bin/python scripts/control_sweep.py --model BUNDLE --data data/sprites-heldout --guidance 1,2,3 \
        [--temperature 0] [--steps 8]

Faster than a full `genie eval` when comparing sampling settings: only the held keys and codes are rolled out.
"""

from __future__ import annotations

import argparse

from genie.control import evaluate_control
from genie.evaluate import select_videos
from genie.models.world import WorldModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="held-out folder (every video scored)")
    parser.add_argument("--guidance", default="1", help="comma-separated classifier-free guidance weights")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--frames", type=int, default=10)
    args = parser.parse_args()
    world = WorldModel.load(args.model)
    videos, _ = select_videos(args.data, "all", 17, world.meta.get("training"), progress=False)  # as genie eval's
    for w in (float(v) for v in args.guidance.split(",")):
        world.set_sampling(steps=args.steps, temperature=args.temperature, guidance=w)
        m = evaluate_control(world, videos, args.data, args.frames, args.prompts, progress=False)
        keys = " ".join(f"{k.split('/')[1]}={m[k]:.2f}" for k in m if k.startswith("key_fidelity/") and "_ci" not in k)
        print(
            f"guidance {w:g} temperature {world.temperature:g} steps {world.steps}: control_fidelity "
            f"{m['control_fidelity']:.3f} [{m['control_fidelity_ci95'][0]:.3f}, {m['control_fidelity_ci95'][1]:.3f}] "
            f"code_fidelity {m['code_fidelity']:.3f} lr_opposite {m.get('lr_opposite_rate', float('nan')):.2f} "
            f"jump_rise {m.get('jump_rise_rate', float('nan')):.2f} {keys}",
            flush=True,
        )


if __name__ == "__main__":
    main()
