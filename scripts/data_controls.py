"""Does each control of a recorded folder show in its frames? Per true action: transitions, mean motion (dy, dx)
in pixels a frame (the player on the sprite world, the scene's phase-correlation shift elsewhere), and the share
of its transitions moving each way (genie.control.motion_by_action).

    python scripts/data_controls.py DATA_DIR [--resolution 64] [--frame-stride S]
"""

from __future__ import annotations

import argparse

from genie.control import motion_by_action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--max-videos", type=int, default=64)
    parser.add_argument("--frame-stride", type=int, default=1, help="frames a transition spans (data.frame_stride)")
    args = parser.parse_args()
    table = motion_by_action(args.data, args.resolution, args.max_videos, frame_stride=args.frame_stride)
    print(
        f"{'action':12s} {'transitions':>11s} {'dy':>7s} {'dx':>7s} {'left':>6s} {'right':>6s} {'up':>6s} {'down':>6s}"
    )
    for name, row in table.items():
        dy, dx = row["mean_motion"]
        shares = " ".join(f"{row[k]:6.2f}" for k in ("left", "right", "up", "down"))
        print(f"{name:12s} {row['transitions']:11d} {dy:7.2f} {dx:7.2f} {shares}")


if __name__ == "__main__":
    main()
