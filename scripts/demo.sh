#!/usr/bin/env bash
# `make demo`: the whole pipeline on a CPU in about a quarter of an hour: data -> tokenizer -> LAM -> dynamics
# -> bundle -> held-out eval (with a 1,000-step persistence rollout) -> rollout videos. Re-running resumes or
# skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
GENIE=${GENIE:-.venv/bin/genie}
DATA=${DEMO_DATA:-data/demo-sprites}
HELDOUT=${DEMO_HELDOUT:-data/demo-sprites-heldout}
RUN=${DEMO_RUN:-runs/demo}
start=$(date +%s)

if [ ! -f "$DATA/dataset.json" ]; then
  # 64 episodes: with 16 the dynamics model learned the episodes by heart and fell apart on new ones
  # (docs/results.md: held-out masked accuracy 0.61 vs 0.71 at 400 steps)
  "$GENIE" data sprites --out "$DATA" --episodes "${DEMO_EPISODES:-64}"
fi
if [ ! -f "$HELDOUT/dataset.json" ]; then
  # episodes of another seed: backgrounds, starts and actions the model never trains on
  "$GENIE" data sprites --out "$HELDOUT" --episodes 32 --seed 1
fi
# the sprite configs' step budgets (1500 / 800 / 1500) cut to about twelve CPU minutes in all;
# docs/results.md has what this budget reaches
DEMO_BUDGET=(tokenizer.train.max_steps=400 lam.train.max_steps=400 dynamics.train.max_steps=800
             tokenizer.train.val_every_steps=200 lam.train.val_every_steps=200 dynamics.train.val_every_steps=400)
"$GENIE" train all --config configs/sprites/genie.yaml --data "$DATA" --run-dir "$RUN" "${DEMO_BUDGET[@]}"
train_end=$(date +%s)
"$GENIE" eval --model "$RUN/world_model.pt" --data "$HELDOUT" --split all --out "$RUN/metrics.json" --persistence 1000
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00000.mp4" --compare --out "$RUN/compare.gif"
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00001.mp4" --random 200 --out "$RUN/rollout200.gif"
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00001.mp4" --random 200 --out "$RUN/rollout200.mp4"

# the sprite world shipped in the repository (docs/sprites-world.md): each key held 10 frames from one held-out prompt
SPRITES=models/sprites-world.pt
if [ -f "$SPRITES" ]; then
  .venv/bin/python scripts/hold_keys.py --model "$SPRITES" --prompt "$HELDOUT/episode_00005.mp4" --frames 10 \
    --out "$RUN/sprites_world_keys.png" --gif "$RUN/sprites_world_keys.gif"
fi

# the CoinRun world shipped in the repository (docs/coinrun.md), on levels it never trained on
COINRUN=models/coinrun-cpu.pt
COINRUN_PROMPTS=data/coinrun-demo-prompts
if [ -f "$COINRUN" ]; then
  [ -f "$COINRUN_PROMPTS/dataset.json" ] || "$GENIE" data procgen --env coinrun --out "$COINRUN_PROMPTS" --episodes 2 --seed 1
  "$GENIE" rollout --model "$COINRUN" --prompt "$COINRUN_PROMPTS/episode_00000.mp4" --compare --out "$RUN/coinrun_compare.gif"
  "$GENIE" rollout --model "$COINRUN" --prompt "$COINRUN_PROMPTS/episode_00001.mp4" \
    --actions right,right,right,right,right,right,jump,jump,right,right,right,right,left,left,left,left --out "$RUN/coinrun_keys.gif"
fi

echo
echo "demo finished in $(( $(date +%s) - start )) s ($(( train_end - start )) s to data and training). Outputs in $RUN/:"
echo "  world_model.pt   the bundle            metrics.json      held-out eval (metrics.persistence.png: 1,000 steps)"
echo "  compare.gif      real vs generated     rollout200.gif    200 random latent actions"
echo "Play it:  $GENIE play --model $RUN/world_model.pt   (then open http://127.0.0.1:8765; arrow keys move the player)"
if [ -f "$SPRITES" ]; then
  echo "  sprites_world_keys.png / .gif   the shipped sprite world ($SPRITES), each key held from one prompt"
  echo "Play the shipped sprite world:  $GENIE play --model $SPRITES   (arrow keys: the codes named left/right/up/down)"
fi
if [ -f "$COINRUN" ]; then
  echo "  coinrun_compare.gif / coinrun_keys.gif   the shipped CoinRun world ($COINRUN) on held-out levels"
  echo "Play CoinRun:  $GENIE play --model $COINRUN   (arrow keys: left, right; up or space: jump)"
fi
