#!/usr/bin/env bash
# Regularisation at equal CPU budget: the same 2 x 256 model and the same steps on The Time Machine
# (161,000 training characters, so a few minutes of CPU are enough to overfit it), with and without
# AWD-LSTM's options, several seeds; then both validation losses of each run (benchmarks/quality.py:
# stateful over the whole held-out 10%, and nanoGPT's way over 1,024 windows).
# Usage: bash benchmarks/awd_cpu.sh [steps] [seeds...]      (reads ../shared/data/timemachine.txt)
set -eu
STEPS=${1:-600}; shift || true
SEEDS=${*:-1 2 3}
TEXT=${TEXT:-../shared/data/timemachine.txt}
COMMON="--dataset $TEXT --hidden-size 256 --embed-dim 64 --batch-size 32 --seq-len 128 --lr 3e-3 --max-steps $STEPS
        --eval-every 200 --eval-batches 10 --sample-chars 0 --device cpu --quiet --overwrite"
declare -A RECIPES=(
  [plain]="--dropout 0.2"
  [awd]="--dropout 0.2 --weight-drop 0.25 --locked-dropout 0.3 --embed-dropout 0.05"
)
for seed in $SEEDS; do
  for recipe in plain awd; do
    out=runs/awd_cpu/${recipe}_s$seed
    start=$(date +%s)
    # shellcheck disable=SC2086
    python -m lstm_model.train $COMMON ${RECIPES[$recipe]} --seed "$seed" --out "$out" 2>&1 | grep -E "Validation over" || true
    echo "$recipe seed $seed: $(( $(date +%s) - start )) s of training"
    python benchmarks/quality.py --model "$out" --text "$TEXT" --val-fraction 0.1 --samples 0 --windows 1024 | grep "validation loss"
  done
done
