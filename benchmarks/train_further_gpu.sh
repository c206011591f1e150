#!/usr/bin/env bash
# More GPU runs after train_bundled_gpu.sh, side by side on one GPU. The default set (ONLY unset):
# - s768_wd50, s768_ft_wd40, s768_ft_wd50: Tiny Shakespeare 2 x 768 with AWD-LSTM's stronger settings
#   (weight drop 0.4-0.5, locked dropout 0.4), from scratch and continued from the bundled model
#   (`--init-from assets/shakespeare`: a fresh optimiser and cosine schedule, a warm restart);
# - babi_ft: generated bAbI chat, continued from assets/babi with the state carried between conversations;
# - babi_p2, then babi_p2_p4: generated bAbI chat from scratch at 2 x 512, two people first (`--people 2`),
#   then all four from there.
# Also available by name (ONLY="..."):
# - babi_fresh_ft, babi_fresh: each conversation read from a fresh state (`--conversation-state fresh`),
#   continued from assets/babi and from scratch at 2 x 512;
# - babi_t1p2: task 1, two people, <= 8 facts a story, 2 x 512;
# - s3x640_awd: Tiny Shakespeare at 3 x 640 with the bundled recipe's AWD options;
# - babi_probe_ft, babi_probe: bAbI chat with distance probes mixed in (`--probe-share 0.3
#   --probe-distance 20`), continued from assets/babi and from scratch at 2 x 512;
# - babi_drill, then babi_drill_mix: the binding drill (two people, one move each, both asked) from
#   scratch at 2 x 512 for half the time, then the chat with probes from it at lr 1e-3.
# (The curriculum that binds names on CPU, with the drill kept in every wider stage's mix, is
# benchmarks/babi_curriculum.sh; it runs on a GPU with DEVICE=cuda.)
# Every run ends on time (`--time-limit`); the models, fp16, are packed in one tar of 15 MB parts in $OUT.
# Usage: bash benchmarks/train_further_gpu.sh [seconds per run]      (DEVICE=cpu for a dry run)
#        ONLY="babi_drill babi_probe babi_probe_ft s3x640_awd" bash benchmarks/train_further_gpu.sh 420
# Corpora, wheels and the rest of the environment: benchmarks/gpu_common.sh.
set -u
LIMIT=${1:-400}
OUT=${OUT:-runs/gpu-out}
SWEEP=runs/sweep2
mkdir -p "$OUT" "$SWEEP"
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh
ONLY=${ONLY:-s768_wd50 s768_ft_wd40 s768_ft_wd50 babi_ft babi_p2}
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
if wanted s768_wd50 || wanted s768_ft_wd40 || wanted s768_ft_wd50 || wanted s3x640_awd; then
  need_file "$SHAKESPEARE_TXT" SHAKESPEARE_TXT
fi
gpu_setup
TS=$SHAKESPEARE_TXT
babi_chat_data runs/babi-chat &
wanted babi_p2 && babi_chat_data runs/babi-p2 --people 2 &
wanted babi_probe || wanted babi_probe_ft || wanted babi_drill && babi_chat_data runs/babi-probe --probe-share 0.3 --probe-distance 20 &
wanted babi_drill && babi_chat_data runs/babi-drill --tasks 1 --people 2 --probe-share 1 --probe-distance 1 --probe-lead 0 --stories 200000 &
wanted babi_t1p2 && babi_chat_data runs/babi-t1p2-200k --tasks 1 --people 2 --max-facts 8 --stories 200000 &
wait
COMMON="--device ${DEVICE:-cuda} --eval-every 250 --eval-batches 10 --quiet --epochs 100000"
STRONG="--dropout 0.25 --locked-dropout 0.4 --embed-dropout 0.1 --weight-decay 0.1 --batch-size 256 --seq-len 128"
CHAT="--turn-separator \n --stop-sequence \n --loss-on replies --dropout 0 --weight-decay 0.01 --batch-size 128 --seq-len 512 --conversation-state carried"
FRESH="--turn-separator \n --stop-sequence \n --loss-on replies --dropout 0 --weight-decay 0.01 --batch-size 256 --seq-len 256 --conversation-state fresh"
PROBE="--turn-separator \n --stop-sequence \n --loss-on replies --dropout 0 --weight-decay 0.01 --batch-size 128 --seq-len 512 --conversation-state fresh"
HALF=$(( (${LIMIT%.*} - 40) / 2 ))  # two stages and the first one's final measures in LIMIT
declare -A RUNS=(
  [s768_wd50]="--dataset $TS --hidden-size 768 --embed-dim 128 $STRONG --weight-drop 0.5 --lr 3e-3 --warmup-steps 100 --time-limit $LIMIT"
  [s768_ft_wd40]="--dataset $TS --init-from assets/shakespeare $STRONG --weight-drop 0.4 --lr 1e-3 --warmup-steps 100 --time-limit $LIMIT"
  [s768_ft_wd50]="--dataset $TS --init-from assets/shakespeare $STRONG --weight-drop 0.5 --lr 2e-3 --warmup-steps 100 --time-limit $LIMIT"
  [babi_ft]="--dataset runs/babi-chat --init-from assets/babi $CHAT --lr 1.5e-3 --warmup-steps 100 --time-limit $LIMIT"
  [babi_fresh_ft]="--dataset runs/babi-chat --init-from assets/babi $FRESH --lr 1.5e-3 --warmup-steps 100 --time-limit $LIMIT"
  [babi_fresh]="--dataset runs/babi-chat --hidden-size 512 --embed-dim 64 $FRESH --lr 3e-3 --warmup-steps 200 --time-limit $LIMIT"
  [babi_probe_ft]="--dataset runs/babi-probe --init-from assets/babi $PROBE --lr 1.5e-3 --warmup-steps 100 --time-limit $LIMIT"
  [babi_probe]="--dataset runs/babi-probe --vocab-from assets/babi --hidden-size 512 --embed-dim 64 $PROBE --lr 3e-3 --warmup-steps 200 --time-limit $LIMIT"
  [babi_drill]="--dataset runs/babi-drill --vocab-from assets/babi --hidden-size 512 --embed-dim 64 $FRESH --lr 3e-3 --warmup-steps 200 --time-limit $HALF"
  [babi_t1p2]="--dataset runs/babi-t1p2-200k --vocab-from assets/babi --hidden-size 512 --embed-dim 64 $FRESH --lr 3e-3 --warmup-steps 200 --time-limit $LIMIT"
  [s3x640_awd]="--dataset $TS --hidden-size 640 --num-layers 3 --embed-dim 128 --dropout 0.2 --weight-drop 0.25 --locked-dropout 0.3 --embed-dropout 0.05 --weight-decay 0.1 --batch-size 256 --seq-len 128 --lr 3e-3 --warmup-steps 100 --time-limit $LIMIT"
  [babi_p2]="--dataset runs/babi-p2 --vocab-from assets/babi --hidden-size 512 --embed-dim 64 $CHAT --lr 2e-3 --warmup-steps 200 --time-limit $HALF"
)
TIMEOUT=$(( ${LIMIT%.*} + 100 ))
for name in "${!RUNS[@]}"; do
  wanted "$name" || continue
  if [ "$name" = babi_p2 ]; then  # the curriculum's second stage starts from its first
    ( sweep_run "$SWEEP" babi_p2 $TIMEOUT "${RUNS[babi_p2]} $COMMON"
      sweep_run "$SWEEP" babi_p2_p4 $TIMEOUT "--dataset runs/babi-chat --init-from $SWEEP/babi_p2 $CHAT --lr 1.5e-3 --warmup-steps 100 --time-limit $HALF $COMMON" ) &
  elif [ "$name" = babi_drill ]; then  # binding first, then the whole task from there
    ( sweep_run "$SWEEP" babi_drill $TIMEOUT "${RUNS[babi_drill]} $COMMON"
      sweep_run "$SWEEP" babi_drill_mix $TIMEOUT "--dataset runs/babi-probe --init-from $SWEEP/babi_drill $PROBE --lr 1e-3 --warmup-steps 100 --time-limit $HALF $COMMON" ) &
  else
    sweep_run "$SWEEP" "$name" $TIMEOUT "${RUNS[$name]} $COMMON" &
  fi
done
wait
sweep_summary "$SWEEP"
# every run of this round, its weights if it has some
# shellcheck disable=SC2046
pack_runs "$SWEEP" "$OUT" $(cd "$SWEEP" && ls -d -- */ | tr -d /)
