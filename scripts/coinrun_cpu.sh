#!/usr/bin/env bash
# The CPU CoinRun world model (configs/coinrun-cpu/): data -> tokenizer and LAM side by side (one thread
# each: on 2 cores two one-thread runs beat one two-thread run) -> dynamics -> bundle -> held-out eval
# on other levels -> rollout GIFs. Re-running resumes or skips finished stages. Logs in $RUN/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
GENIE=${GENIE:-.venv/bin/genie}
DATA=${COINRUN_DATA:-data/coinrun-cpu}
HELDOUT=${COINRUN_HELDOUT:-data/coinrun-cpu-heldout}
RUN=${COINRUN_RUN:-runs/coinrun-cpu}
mkdir -p "$RUN"
start=$(date +%s)
[ -f "$DATA/dataset.json" ] || "$GENIE" data procgen --env coinrun --out "$DATA" --episodes 128 --seed 0
# levels of another seed: the held-out split
[ -f "$HELDOUT/dataset.json" ] || "$GENIE" data procgen --env coinrun --out "$HELDOUT" --episodes 32 --seed 1
OMP_NUM_THREADS=1 "$GENIE" train tokenizer --config configs/coinrun-cpu/tokenizer.yaml \
  --data "$DATA" --run-dir "$RUN/tokenizer" > "$RUN/tokenizer.log" 2>&1 &
tok=$!
OMP_NUM_THREADS=1 "$GENIE" train lam --config configs/coinrun-cpu/lam.yaml \
  --data "$DATA" --run-dir "$RUN/lam" > "$RUN/lam.log" 2>&1 &
lam=$!
wait $tok
wait $lam
echo "tokenizer and LAM done after $(( $(date +%s) - start )) s"
"$GENIE" train all --config configs/coinrun-cpu/genie.yaml --data "$DATA" --run-dir "$RUN" > "$RUN/dynamics.log" 2>&1
echo "bundle written after $(( $(date +%s) - start )) s: $RUN/world_model.pt"
"$GENIE" eval --model "$RUN/world_model.pt" --data "$HELDOUT" --split all --out "$RUN/metrics.json" --persistence 1000
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00000.mp4" --compare --out "$RUN/compare.gif"
"$GENIE" rollout --model "$RUN/world_model.pt" --prompt "$HELDOUT/episode_00001.mp4" --random 200 --out "$RUN/rollout200.gif"
echo "done in $(( $(date +%s) - start )) s"
