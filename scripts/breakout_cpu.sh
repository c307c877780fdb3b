#!/usr/bin/env bash
# The CoinRun CPU recipe (configs/coinrun-cpu/) on Atari Breakout: data -> tokenizer and LAM side by side (one
# thread each) -> dynamics -> bundle -> held-out eval on episodes of another seed -> rollout GIFs.
# BUDGET (stage overrides) cuts the step counts; the default is half the CoinRun recipe's steps (docs/breakout.md).
# Re-running resumes or skips finished stages. Logs in $RUN/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
GENIE=${GENIE:-.venv/bin/genie}
DATA=${BREAKOUT_DATA:-data/breakout-cpu}
HELDOUT=${BREAKOUT_HELDOUT:-data/breakout-cpu-heldout}
RUN=${BREAKOUT_RUN:-runs/breakout-cpu}
TOK_STEPS=${TOK_STEPS:-300} LAM_STEPS=${LAM_STEPS:-400} DYN_STEPS=${DYN_STEPS:-400}
mkdir -p "$RUN"
start=$(date +%s)
[ -f "$DATA/dataset.json" ] || "$GENIE" data atari --env Breakout --out "$DATA" --episodes 128 --seed 0 --resolution 64
# another seed: the held-out split
[ -f "$HELDOUT/dataset.json" ] || "$GENIE" data atari --env Breakout --out "$HELDOUT" --episodes 32 --seed 1 --resolution 64
OMP_NUM_THREADS=1 "$GENIE" train tokenizer --config configs/coinrun-cpu/tokenizer.yaml --data "$DATA" \
  --run-dir "$RUN/tokenizer" train.max_steps="$TOK_STEPS" train.val_every_steps=100 > "$RUN/tokenizer.log" 2>&1 &
tok=$!
OMP_NUM_THREADS=1 "$GENIE" train lam --config configs/coinrun-cpu/lam.yaml --data "$DATA" \
  --run-dir "$RUN/lam" train.max_steps="$LAM_STEPS" train.val_every_steps=100 > "$RUN/lam.log" 2>&1 &
lam=$!
wait $tok
wait $lam
echo "tokenizer and LAM done after $(( $(date +%s) - start )) s"
"$GENIE" train all --config configs/coinrun-cpu/genie.yaml --data "$DATA" --run-dir "$RUN" \
  tokenizer.train.max_steps="$TOK_STEPS" lam.train.max_steps="$LAM_STEPS" dynamics.train.max_steps="$DYN_STEPS" \
  tokenizer.train.val_every_steps=100 lam.train.val_every_steps=100 dynamics.train.val_every_steps=200 \
  > "$RUN/dynamics.log" 2>&1
echo "bundle written after $(( $(date +%s) - start )) s: $RUN/world_model.pt"
"$GENIE" eval --model "$RUN/world_model.pt" --data "$HELDOUT" --split all --out "$RUN/metrics.json" > "$RUN/eval.log" 2>&1
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00000.mp4" --compare --out "$RUN/compare.gif"
echo "done in $(( $(date +%s) - start )) s"
