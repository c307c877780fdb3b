#!/usr/bin/env bash
# The prepared speed check for a session that has the lent GPU (issue 7): CoinRun-sized models, eager and
# compiled, bf16. Run it through the device tool from the repository root:
#     bash scripts/gpu_check.sh            # JSON and a log land in $OUT (the device tool brings them back)
# Each bench has its own time limit, so a slow compile costs one row, not the whole check. About 6-8
# minutes in all (estimated: it has not yet run on a GPU). Record the figures in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
# decord is not on the lent machine (shared/GPU.md): carry its wheel in .whl/ for the decode figure
if ls .whl/decord-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/decord-*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
DATA_ARGS=()
if [ -d data/coinrun ]; then DATA_ARGS=(--data data/coinrun); fi

run() {  # run NAME LIMIT_S ARGS...
  local name=$1 limit=$2; shift 2
  echo "=== $name" | tee -a "$OUT/log.txt"
  timeout "$limit" $PY -m genie.cli bench --config configs/coinrun/genie.yaml --device cuda --out "$OUT/$name.json" "$@" 2>&1 \
    | grep -v Warning | tail -n 20 | tee -a "$OUT/log.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/log.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/log.txt"
# eager bf16: train rows at 16 clips a step, play at batch 1 and 8 with the default 8 MaskGIT steps
run bench_eager 180 --batch-size 16 "${DATA_ARGS[@]}"
# the same, compiled: torch.compile train steps, CUDA graphs (reduce-overhead) for the per-frame play pass
run bench_compiled 300 --batch-size 16 --compile
# fewer MaskGIT steps for play: the speed side of the steps/quality trade
run bench_play_steps4 90 --stages dynamics --batch-size 16 --steps 4 --compile --play-batches 1
ls -la "$OUT"
