#!/usr/bin/env bash
# The training runs behind the bundled models, side by side on one GPU (a GPU machine starts bare:
# its own Python with torch, plus the wheels in .whl/ for what it lacks, such as `datasets`). Each run
# is `python -m lstm_model.train ... --time-limit LIMIT`, so its cosine schedule ends on time; then
# the best Tiny Shakespeare run, the Time Machine run and every bAbI-chat run (by whole-split
# validation loss; their answers are scored afterwards by benchmarks/memory_tasks.py) are copied to
# $OUT with fp16 weights, packed in one tar split into 15 MB parts.
# Corpora are read from .device_data/ (an ignored copy of ../shared/data, never committed); the
# bAbI-chat dataset is generated here by `python -m lstm_model.memory_tasks`.
# Usage: bash benchmarks/train_bundled_gpu.sh [seconds per run]      (DEVICE=cpu for a dry run)
set -u
LIMIT=${1:-400}
OUT=${OUT:-runs/gpu-out}
SWEEP=runs/sweep
mkdir -p "$OUT" "$SWEEP"
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh
gpu_setup
TS=.device_data/tinyshakespeare.txt
TM=.device_data/timemachine.txt
BABI=runs/babi-chat
python3 -m lstm_model.memory_tasks --out $BABI --stories ${BABI_STORIES:-60000} --validation 300 --test 300 --seed 0 2>&1 | grep -v Saving
COMMON="--device ${DEVICE:-cuda} --eval-every 250 --eval-batches 10 --quiet --time-limit $LIMIT --epochs 100000"
AWD="--dropout 0.2 --weight-drop 0.25 --locked-dropout 0.3 --embed-dropout 0.05 --weight-decay 0.1"
CHAT="--dataset $BABI --turn-separator \n --stop-sequence \n --loss-on replies --embed-dim 64 --dropout 0 --weight-decay 0.01 --warmup-steps 200"
declare -A RUNS=(
  [s600_awd]="--dataset $TS --hidden-size 600 --embed-dim 128 $AWD --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100"
  [s768_awd]="--dataset $TS --hidden-size 768 --embed-dim 128 $AWD --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100"
  [s600_d45]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.45 --weight-decay 0.1 --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100"
  [tm_384_awd]="--dataset $TM --hidden-size 384 --embed-dim 64 $AWD --batch-size 64 --seq-len 256 --lr 2e-3 --warmup-steps 100"
  # The bAbI runs below learned only recency (the previous assets/babi); the bundled one now comes from
  # benchmarks/babi_curriculum.sh (DEVICE=cuda on a GPU).
  [babi_512_t512]="$CHAT --hidden-size 512 --batch-size 128 --seq-len 512 --lr 2e-3"
  [babi_512_t256]="$CHAT --hidden-size 512 --batch-size 256 --seq-len 256 --lr 3e-3"
  [babi_768_t512]="$CHAT --hidden-size 768 --batch-size 128 --seq-len 512 --lr 1.5e-3"
)
for name in "${!RUNS[@]}"; do
  rm -rf "$SWEEP/$name"
  ( start=$(date +%s)
    # shellcheck disable=SC2086  # the flags are meant to split
    timeout -s TERM $(( ${LIMIT%.*} + 240 )) python3 -m lstm_model.train ${RUNS[$name]} $COMMON --out "$SWEEP/$name" > "$SWEEP/$name.log" 2>&1
    echo "$(( $(date +%s) - start ))" > "$SWEEP/$name.seconds" ) &
done
wait
{
  for name in $(printf '%s\n' "${!RUNS[@]}" | sort); do
    echo "== $name: ${RUNS[$name]} ($(cat $SWEEP/$name.seconds 2>/dev/null) s)"
    grep -E "^step|Training a|Validation over|Int8|rror" "$SWEEP/$name.log" | tail -4; grep -A12 Traceback "$SWEEP/$name.log" | head -14
    cat "$SWEEP/$name/final_metrics.json" 2>/dev/null; echo
  done
} > "$SWEEP/summary.txt"
best=$(python3 - <<'PY'
import json, glob
scores = [(json.load(open(p))["val_loss_full"], p.split("/")[2]) for p in glob.glob("runs/sweep/s*/final_metrics.json")]
print(min(scores)[1] if scores else "")
PY
)
echo "best Shakespeare run: $best" >> "$SWEEP/summary.txt"
# the best Shakespeare run and the rest; a run with no weights (it failed) is left out
for name in $best tm_384_awd babi_512_t512 babi_512_t256 babi_768_t512; do
  [ -f "$SWEEP/$name/model.safetensors" ] && packed="${packed:-} $name"
done
# shellcheck disable=SC2086
pack_runs "$SWEEP" "$OUT" ${packed:-}
