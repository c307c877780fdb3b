#!/usr/bin/env bash
# A real-gameplay world model on a 2-core CPU, with the CoinRun recipe (configs/coinrun-cpu/):
#   bash scripts/train_cpu.sh coinrun     # docs/coinrun.md: the shipped models/coinrun-cpu.pt
#   bash scripts/train_cpu.sh breakout    # docs/breakout.md: the same recipe on Atari Breakout
# data (128 training episodes of seed 0, 32 held-out ones of seed 1: other levels / other episodes) -> tokenizer
# and LAM side by side (one thread each: on 2 cores two one-thread runs beat one two-thread run) -> dynamics
# -> bundle -> held-out eval with a 1,000-step persistence rollout -> rollout GIFs. Re-running resumes or
# skips finished stages. Logs in $RUN/*.log; DATA, HELDOUT and RUN override the folders.
set -euo pipefail
cd "$(dirname "$0")/.."
GENIE=${GENIE:-.venv/bin/genie}
env=${1:?usage: scripts/train_cpu.sh coinrun|breakout}
case "$env" in
  coinrun) generate=(procgen --env coinrun) ;;
  breakout) generate=(atari --env Breakout --resolution 64) ;;
  *) echo "scripts/train_cpu.sh: unknown game '$env'; use coinrun or breakout" >&2; exit 2 ;;
esac
DATA=${DATA:-data/$env-cpu}
HELDOUT=${HELDOUT:-data/$env-cpu-heldout}
RUN=${RUN:-runs/$env-cpu}
CONFIG=configs/coinrun-cpu
mkdir -p "$RUN"
start=$(date +%s)
[ -f "$DATA/dataset.json" ] || "$GENIE" data "${generate[@]}" --out "$DATA" --episodes 128 --seed 0
[ -f "$HELDOUT/dataset.json" ] || "$GENIE" data "${generate[@]}" --out "$HELDOUT" --episodes 32 --seed 1
OMP_NUM_THREADS=1 "$GENIE" train tokenizer --config "$CONFIG/tokenizer.yaml" \
  --data "$DATA" --run-dir "$RUN/tokenizer" > "$RUN/tokenizer.log" 2>&1 &
tok=$!
OMP_NUM_THREADS=1 "$GENIE" train lam --config "$CONFIG/lam.yaml" \
  --data "$DATA" --run-dir "$RUN/lam" > "$RUN/lam.log" 2>&1 &
lam=$!
wait $tok
wait $lam
echo "tokenizer and LAM done after $(( $(date +%s) - start )) s"
"$GENIE" train all --config "$CONFIG/genie.yaml" --data "$DATA" --run-dir "$RUN" > "$RUN/dynamics.log" 2>&1
echo "bundle written after $(( $(date +%s) - start )) s: $RUN/world_model.pt"
"$GENIE" eval --model "$RUN/world_model.pt" --data "$HELDOUT" --split all --out "$RUN/metrics.json" --persistence 1000
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00000.mp4" --compare --out "$RUN/compare.gif"
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00001.mp4" --random 200 --out "$RUN/rollout200.gif"
echo "done in $(( $(date +%s) - start )) s"
