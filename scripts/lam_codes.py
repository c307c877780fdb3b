"""What each latent code of a trained LAM means on a labelled folder: per code, its transitions by true action and
its purity (the share of its most common true action), the transition-weighted purity over all codes, and the mean
motion (dy, dx) of each code's real transitions in pixels a step (the player on the sprite world, the scene's global
shift elsewhere: genie.control.transition_motion; for a scene, dx < 0 is content moving left, the camera following
the player right).

    python scripts/lam_codes.py RUN_OR_BUNDLE DATA_DIR [--max-transitions 4096] [--frame-stride S]

--frame-stride: the step between the frames of a transition; default the LAM's training data.frame_stride.

It reads the folder's sidecars (true actions) only to score; the LAM never sees them (genie/data/labels.py).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from genie.control import motion_tracker, transition_motion
from genie.data.clips import usable_videos
from genie.data.labels import dataset_action_names, read_labelled
from genie.models.checkpoint import load_checkpoint
from genie.models.lam import load_lam
from genie.models.pixels import video_to_float


def trained_stride(path: str) -> int:
    """The data.frame_stride a LAM run folder or .ckpt was trained with (1 for a bundle or an unrecorded one)."""
    from pathlib import Path

    path = Path(path)
    ckpt = load_checkpoint(path / "checkpoints" / "last.ckpt" if path.is_dir() else path)
    config = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    return int((config.get("data") or {}).get("frame_stride", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lam", help="a LAM run folder, its .ckpt, or a world-model bundle")
    parser.add_argument("data", help="a labelled video folder (held-out episodes)")
    parser.add_argument("--max-transitions", type=int, default=4096)
    parser.add_argument("--frame-stride", type=int, default=None)
    args = parser.parse_args()
    lam = load_lam(args.lam)
    stride = args.frame_stride or trained_stride(args.lam)
    names = dataset_action_names(args.data) or []
    videos = usable_videos(args.data, lam.cfg.max_frames, progress=False)
    data = read_labelled(lam, videos, lam.cfg.resolution, stride, max_transitions=args.max_transitions)
    if data is None:
        raise SystemExit(f"{args.data}: no labelled transitions (no *.actions.npy sidecars)")
    k = lam.cfg.num_actions
    counts = np.zeros((k, max(len(names), int(data.labels.max()) + 1)), dtype=np.int64)
    np.add.at(counts, (data.codes, data.labels), 1)
    label = names or [str(a) for a in range(counts.shape[1])]
    pairs = torch.stack([video_to_float(torch.from_numpy(f)) for f in (data.before, data.after)], 1)  # (N, 2, 3, H, W)
    motion = transition_motion(pairs, motion_tracker(args.data))[:, 0].numpy()  # (N, 2)
    print(f"frame stride {stride}")
    print("code " + " ".join(f"{n:>7s}" for n in label) + "   purity      dy      dx")
    for c in range(k):
        if counts[c].sum():
            dy, dx = np.nanmean(motion[data.codes == c], 0)
            print(
                f"{c:4d} "
                + " ".join(f"{v:7d}" for v in counts[c])
                + f"   {counts[c].max() / counts[c].sum():.2f}   {dy:+5.2f}   {dx:+5.2f}"
            )
    print(
        f"code_purity {counts.max(1).sum() / counts.sum():.3f} over {counts.sum()} transitions of {len(videos)} videos"
    )


if __name__ == "__main__":
    main()
