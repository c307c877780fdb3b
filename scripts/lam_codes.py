"""What each latent code of a trained LAM means on a labelled folder: per code, its transitions by true action and
its purity (the share of its most common true action), and the transition-weighted purity over all codes.

    python scripts/lam_codes.py RUN_OR_BUNDLE DATA_DIR [--max-transitions 4096]

It reads the folder's sidecars (true actions) only to score; the LAM never sees them (genie/data/actions.py).
"""

from __future__ import annotations

import argparse

import numpy as np

from genie.data.actions import dataset_action_names, read_labelled
from genie.data.clips import usable_videos
from genie.models.lam import load_lam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lam", help="a LAM run folder, its .ckpt, or a world-model bundle")
    parser.add_argument("data", help="a labelled video folder (held-out episodes)")
    parser.add_argument("--max-transitions", type=int, default=4096)
    args = parser.parse_args()
    lam = load_lam(args.lam)
    names = dataset_action_names(args.data) or []
    videos = usable_videos(args.data, lam.cfg.max_frames, progress=False)
    data = read_labelled(lam, videos, lam.cfg.resolution, max_transitions=args.max_transitions)
    if data is None:
        raise SystemExit(f"{args.data}: no labelled transitions (no *.actions.npy sidecars)")
    k = lam.cfg.num_actions
    counts = np.zeros((k, max(len(names), int(data.labels.max()) + 1)), dtype=np.int64)
    np.add.at(counts, (data.codes, data.labels), 1)
    label = names or [str(a) for a in range(counts.shape[1])]
    print("code " + " ".join(f"{n:>7s}" for n in label) + "   purity")
    for c in range(k):
        if counts[c].sum():
            print(f"{c:4d} " + " ".join(f"{v:7d}" for v in counts[c]) + f"   {counts[c].max() / counts[c].sum():.2f}")
    print(
        f"code_purity {counts.max(1).sum() / counts.sum():.3f} over {counts.sum()} transitions of {len(videos)} videos"
    )


if __name__ == "__main__":
    main()
