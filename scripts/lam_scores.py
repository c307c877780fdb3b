"""How well a LAM's latent actions name a folder's true actions, beside a supervised inverse-dynamics ceiling:
genie.scoring.action_scores for a LAM alone (a run folder, .ckpt or bundle), so LAM variants can be compared
on held-out episodes without training a dynamics model first.

    python scripts/lam_scores.py runs/coinrun-cpu/lam data/coinrun-cpu-heldout [--frame-stride 1] [--seed 0] [--out F]

Frames are fitted with the default fit; a bundle's stored action map and fit are not used (`genie eval` scores a
bundle).
"""

import argparse
import json
import sys
from types import SimpleNamespace

from genie.data.clips import DataError
from genie.models.lam import load_lam
from genie.scoring import action_scores

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("lam", help="LAM run folder, stage checkpoint or world-model bundle")
parser.add_argument("data", help="folder of videos with *.actions.npy sidecars (held-out episodes)")
parser.add_argument("--frame-stride", type=int, default=1, help="score every n-th frame's transition")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", help="also write the scores to this JSON file")
args = parser.parse_args()
lam = load_lam(args.lam)
world = SimpleNamespace(
    lam=lam, resolution=lam.cfg.resolution, num_actions=lam.cfg.num_actions, device="cpu", meta=None
)
try:
    scores = action_scores(world, args.data, frame_stride=args.frame_stride, seed=args.seed, progress=True)
except DataError as error:
    sys.exit(f"lam_scores: {error}")
if not scores:
    sys.exit(f"lam_scores: no labelled transitions in {args.data}: it needs videos with *.actions.npy sidecars")
scores["probe_of_ceiling"] = scores["action_probe_acc"] / scores["idm_ceiling_acc"]
text = json.dumps(scores, indent=1)
print(text)
if args.out:
    open(args.out, "w").write(text + "\n")
