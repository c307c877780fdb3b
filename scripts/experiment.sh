#!/usr/bin/env bash
# One side-by-side experiment of issue 13 (docs/results.md): train the sprite pipeline at the demo budget,
# then score it on held-out episodes (another generator seed) and with a 1,000-step persistence rollout.
#   scripts/experiment.sh NAME TRAIN_DATA HELDOUT_DATA [REUSE_RUN] [overrides...]
# REUSE_RUN (or "-") copies that run's tokenizer and LAM, so only the dynamics stage trains.
set -euo pipefail
# one torch thread a process: two experiments side by side use both cores without oversubscription
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
GENIE=${GENIE:-.venv/bin/genie}
name=$1 data=$2 heldout=$3 reuse=${4:--}
shift 4 || shift $#
run=runs/exp/$name
mkdir -p "$run"
if [ "$reuse" != "-" ] && [ ! -d "$run/tokenizer" ]; then
  cp -r "$reuse/tokenizer" "$reuse/lam" "$run/"
fi
BUDGET=(tokenizer.train.max_steps=400 lam.train.max_steps=400 dynamics.train.max_steps=800
        tokenizer.train.val_every_steps=200 lam.train.val_every_steps=200 dynamics.train.val_every_steps=400)
start=$(date +%s)
"$GENIE" train all --config configs/sprites/genie.yaml --data "$data" --run-dir "$run" "${BUDGET[@]}" "$@" > "$run/train.log" 2>&1
echo "train_seconds $(( $(date +%s) - start ))" > "$run/times.txt"
"$GENIE" eval --model "$run/world_model.pt" --data "$heldout" --split all --out "$run/heldout.json" --persistence 1000 > "$run/eval.log" 2>&1
cat "$run/eval.log" | grep -v "it/s" || true
