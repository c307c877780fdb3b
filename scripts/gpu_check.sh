#!/usr/bin/env bash
# The prepared speed check for a session that has the lent GPU (issue 7): CoinRun-sized models, bf16,
# eager and compiled. Run it through the device tool from the repository root, as one command:
#     bash scripts/gpu_check.sh            # JSON files and log.txt land in $OUT (the device tool brings them back)
# Each bench has its own time limit (550 s in all, under the device tool's 600 s a command) and rewrites its
# JSON after every row, so a slow compile costs the rows after it, not the run. It has not yet run on a GPU.
# Record the figures in docs/benchmarks.md with the device named.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG="$OUT/log.txt"
# decord is not on the lent machine (shared/GPU.md): carry its wheel in .whl/ for the decode figure
if ls .whl/decord-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/decord-*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
DATA_ARGS=()
if [ -d data/coinrun ] && $PY -c "import decord" 2>/dev/null; then DATA_ARGS=(--data data/coinrun --data-workers 8); fi

run() {  # run NAME LIMIT_S ARGS...: one genie bench, its exit status logged (124 = ran out of time)
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
  timeout "$limit" $PY -m genie.cli bench --config configs/coinrun/genie.yaml --device cuda --out "$OUT/$name.json" "$@" \
    > "$OUT/$name.out" 2>&1
  local status=$?
  grep -E "^(train|play|data|cuda|NVIDIA|genie)|Error" "$OUT/$name.out" | tee -a "$LOG"
  echo "exit status $status" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$LOG"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOG"
# eager bf16: train rows at 16 clips a step (MFU against 788 TFLOP/s), play at batch 1 and 8, 8 MaskGIT steps
run bench_eager 140 --batch-size 16 ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
# compiled: torch.compile train steps, CUDA graphs (reduce-overhead) for the per-frame play passes (dynamics, decoder)
run bench_compiled 300 --batch-size 16 --compile
# 4 MaskGIT steps a frame, compiled: the speed side of the steps / quality trade
run bench_play_steps4 110 --stages dynamics --batch-size 16 --steps 4 --compile --play-batches 1,8
ls -la "$OUT"
