#!/usr/bin/env bash
# `make demo`: the whole pipeline on a CPU in about ten minutes: data -> tokenizer -> LAM -> dynamics
# -> bundle -> eval -> rollout videos. Re-running resumes or skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
GENIE=${GENIE:-.venv/bin/genie}
DATA=${DEMO_DATA:-data/demo-sprites}
RUN=${DEMO_RUN:-runs/demo}
start=$(date +%s)

if [ ! -f "$DATA/dataset.json" ]; then
  # 16 episodes: at this budget the dynamics model learns the player's moves on 16 backgrounds, not on 64
  # (64 episodes measured delta_t_psnr -0.09 dB, docs/results.md)
  "$GENIE" data sprites --out "$DATA" --episodes 16
fi
# the sprite configs' step budgets (1500 / 800 / 1500) cut to about ten CPU minutes in all;
# docs/results.md has what this budget reaches
DEMO_BUDGET=(tokenizer.train.max_steps=400 lam.train.max_steps=400 dynamics.train.max_steps=800
             tokenizer.train.val_every_steps=200 lam.train.val_every_steps=200 dynamics.train.val_every_steps=400)
"$GENIE" train all --config configs/sprites/genie.yaml --data "$DATA" --run-dir "$RUN" "${DEMO_BUDGET[@]}"
"$GENIE" eval --model "$RUN/world_model.pt" --data "$DATA" --out "$RUN/metrics.json" --max-clips 64
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$DATA/episode_00000.mp4" --compare --out "$RUN/compare.gif"
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$DATA/episode_00001.mp4" --random 24 --out "$RUN/rollout.mp4"
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$DATA/episode_00001.mp4" --random 24 --out "$RUN/rollout.gif"

echo
echo "demo finished in $(( $(date +%s) - start )) s. Outputs in $RUN/:"
echo "  world_model.pt   the bundle          metrics.json  eval metrics"
echo "  compare.gif      real vs generated   rollout.mp4   random latent actions"
echo "Play it:  $GENIE play --model $RUN/world_model.pt   (then open http://127.0.0.1:8765, keys 1..8)"
