#!/usr/bin/env bash
# The training runs behind assets/shakespeare (s768_awd) and assets/timemachine (tm_384_awd), side by
# side on one GPU with the runs they were chosen against. Each run is `python -m lstm_model.train ...
# --time-limit LIMIT`, so its cosine schedule ends on time; then the best Tiny Shakespeare run (by
# whole-split validation loss), the Time Machine run and the bAbI-chat runs are copied to $OUT with
# fp16 weights, packed in one tar split into 15 MB parts. The bAbI-chat runs train on conversations
# generated here by `python -m lstm_model.memory_tasks`; assets/babi is no longer one of them (it comes
# from benchmarks/curriculum.py).
# Usage: bash benchmarks/train_bundled_gpu.sh [seconds per run]      (DEVICE=cpu for a dry run)
# Corpora, wheels and the rest of the environment: benchmarks/gpu_common.sh.
set -u
LIMIT=${1:-400}
OUT=${OUT:-runs/gpu-out}
SWEEP=runs/sweep
mkdir -p "$OUT" "$SWEEP"
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh
need_file "$SHAKESPEARE_TXT" SHAKESPEARE_TXT
need_file "$TIMEMACHINE_TXT" TIMEMACHINE_TXT
gpu_setup
TS=$SHAKESPEARE_TXT
TM=$TIMEMACHINE_TXT
BABI=runs/babi-chat
babi_chat_data $BABI
COMMON="--device ${DEVICE:-cuda} --eval-every 250 --eval-batches 10 --quiet --time-limit $LIMIT --epochs 100000"
AWD="--dropout 0.2 --weight-drop 0.25 --locked-dropout 0.3 --embed-dropout 0.05 --weight-decay 0.1"
CHAT="--dataset $BABI --turn-separator \n --stop-sequence \n --loss-on replies --embed-dim 64 --dropout 0 --weight-decay 0.01 --warmup-steps 200"
declare -A RUNS=(
  [s600_awd]="--dataset $TS --hidden-size 600 --embed-dim 128 $AWD --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100"
  [s768_awd]="--dataset $TS --hidden-size 768 --embed-dim 128 $AWD --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100"
  [s600_d45]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.45 --weight-decay 0.1 --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100"
  [tm_384_awd]="--dataset $TM --hidden-size 384 --embed-dim 64 $AWD --batch-size 64 --seq-len 256 --lr 2e-3 --warmup-steps 100"
  # Generated bAbI chat at 2 x 512 / 2 x 768: these learned only recency (the last place said).
  [babi_512_t512]="$CHAT --hidden-size 512 --batch-size 128 --seq-len 512 --lr 2e-3"
  [babi_512_t256]="$CHAT --hidden-size 512 --batch-size 256 --seq-len 256 --lr 3e-3"
  [babi_768_t512]="$CHAT --hidden-size 768 --batch-size 128 --seq-len 512 --lr 1.5e-3"
)
for name in "${!RUNS[@]}"; do
  sweep_run "$SWEEP" "$name" $(( ${LIMIT%.*} + 240 )) "${RUNS[$name]} $COMMON" &
done
wait
sweep_summary "$SWEEP"
best=$(python3 - "$SWEEP" <<'PY'
import json, glob, os, sys
scores = [(json.load(open(p))["val_loss_full"], os.path.basename(os.path.dirname(p)))
          for p in glob.glob(os.path.join(sys.argv[1], "s*", "final_metrics.json"))]
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
