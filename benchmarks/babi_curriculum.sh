#!/usr/bin/env bash
# The curriculum that teaches a small LSTM to bind names to places (issue "Memory you can see in the
# conversation"; benchmarks/README.md, "Memory tasks"). Each stage makes its data with
# `python -m lstm_model.memory_tasks`, then trains with `python -m lstm_model.train`, starting from
# the stage before it (`--init-from`). A stage that finished is skipped; one that was stopped
# (SIGTERM saves a checkpoint) is resumed. Runs on CPU in the background:
#
#   nohup bash benchmarks/babi_curriculum.sh drill pair1 pair2 > runs/curriculum.log 2>&1 &
#
# Stages, in order (each a small step outward; a jump to stories where "the last place said" pays
# undid the binding within 1,000 steps):
#   drill   from scratch: two people, one move each, both asked (binding appears after ~4,000 steps)
#   pair1   paired probes, 0-1 facts before, 0-2 moves between          (two people)
#   pair2   0-2 before, 0-4 between                                     (two people)
#   pair3   0-3 before, 0-8 between                                     (two people)
#   four1   four people, 0-3 before, 0-8 between
#   four2   four people, 0-3 before, 0-20 between
#   four3   four people, 0-3 before, 0-40 between
#   story1  all four tasks (1, 2, 6, 7) as stories: 1-3 facts a message, up to 40 facts, a question
#           after every message; 40% of the conversations still paired probes (to 40 back)
#   story2  the same stories with a question after half the messages (the benchmark's own form),
#           30% probes
# Environment: RUNS (folder of the stages, default runs/curriculum), THREADS (torch threads,
# default 2), SEED (default 1337), BATCH (default 32; 16 bound sooner on the drill), DRILL_SHARE
# (default 0.5), DEVICE (default cpu; cuda where a GPU is lent: the stage times then buy many more
# steps), and per stage SECONDS_<stage> (its --time-limit), LR_<stage> and SEQ_<stage> (characters
# per backpropagation window).
set -eu
RUNS=${RUNS:-runs/curriculum}
SEED=${SEED:-1337}
BATCH=${BATCH:-32}
export OMP_NUM_THREADS=${THREADS:-2}
mkdir -p "$RUNS"
FRESH=(--turn-separator '\n' --stop-sequence '\n' --loss-on replies --conversation-state fresh --dropout 0
       --batch-size "$BATCH" --eval-every 250 --eval-batches 10 --checkpoint-every 250
       --epochs 100000 --quiet --seed "$SEED" --device "${DEVICE:-cpu}")
# Past the drill, half of each stage's probes are drills (DRILL_SHARE): the wider probes alone lost
# most of the binding the drill had taught in their first steps; with the drill kept in the mix less.
PROBES="--tasks 1 --probe-share 1 --drill-share ${DRILL_SHARE:-0.5}"
declare -A DATA=(
  [drill]="--tasks 1 --probe-share 1 --people 2 --probe-distance 1 --probe-min-distance 1 --probe-lead 0 --stories 40000"
  [pair1]="$PROBES --people 2 --probe-distance 2 --probe-lead 1 --stories 30000"
  [pair2]="$PROBES --people 2 --probe-distance 4 --probe-lead 2 --stories 30000"
  [pair3]="$PROBES --people 2 --probe-distance 8 --probe-lead 3 --stories 30000"
  [four1]="$PROBES --people 4 --probe-distance 8 --probe-lead 3 --stories 30000"
  [four2]="$PROBES --people 4 --probe-distance 20 --probe-lead 3 --stories 30000"
  [four3]="$PROBES --people 4 --probe-distance 40 --probe-lead 3 --stories 30000"
  [story1]="--tasks 1 2 6 7 --people 4 --max-facts 40 --question-rate 1 --probe-share 0.4 --probe-distance 40 --drill-share ${DRILL_SHARE:-0.5} --stories 30000"
  [story2]="--tasks 1 2 6 7 --people 4 --max-facts 40 --probe-share 0.3 --probe-distance 40 --drill-share ${DRILL_SHARE:-0.5} --stories 40000"
)
declare -A FROM=([drill]="" [pair1]=drill [pair2]=pair1 [pair3]=pair2 [four1]=pair3 [four2]=four1 [four3]=four2
                 [story1]=four3 [story2]=story1)
declare -A SECONDS_DEFAULT=([drill]=2700 [pair1]=720 [pair2]=540 [pair3]=720 [four1]=900 [four2]=900 [four3]=900
                           [story1]=1200 [story2]=1200)
declare -A LR_DEFAULT=([drill]=3e-3 [pair1]=1e-3 [pair2]=1e-3 [pair3]=1e-3 [four1]=1e-3 [four2]=1e-3 [four3]=1e-3
                      [story1]=1e-3 [story2]=1e-3)
declare -A SEQ_DEFAULT=([drill]=256 [pair1]=256 [pair2]=256 [pair3]=256 [four1]=256 [four2]=512 [four3]=512
                       [story1]=512 [story2]=512)

for stage in "$@"; do
  [ -n "${DATA[$stage]+x}" ] || { echo "unknown stage '$stage': choose from ${!DATA[*]}" >&2; exit 2; }
  out="$RUNS/$stage"
  if [ -f "$out/done" ]; then echo "$stage: done already ($out)"; continue; fi
  data="$RUNS/data-$stage"
  if [ ! -d "$data" ]; then
    # shellcheck disable=SC2086  # the flags are meant to split
    python -m lstm_model.memory_tasks --out "$data" ${DATA[$stage]} \
      --validation 200 --test 200 --seed 0 2>&1 | grep -v "Saving"
  fi
  limit_var="SECONDS_$stage" lr_var="LR_$stage" seq_var="SEQ_$stage"
  limit=${!limit_var:-${SECONDS_DEFAULT[$stage]}} lr=${!lr_var:-${LR_DEFAULT[$stage]}} seq=${!seq_var:-${SEQ_DEFAULT[$stage]}}
  if [ -f "$out/training_state.safetensors" ]; then
    start=(--resume)
  elif [ -z "${FROM[$stage]}" ]; then
    start=(--vocab-from assets/babi --hidden-size 256 --embed-dim 32 --num-layers 2)
  else
    start=(--init-from "$RUNS/${FROM[$stage]}" --vocab-from assets/babi)
  fi
  echo "$stage: $(date -u +%H:%M:%S) training $limit s at lr $lr into $out"
  python -m lstm_model.train --dataset "$data" "${start[@]}" "${FRESH[@]}" --lr "$lr" --seq-len "$seq" --warmup-steps 100 \
    --time-limit "$limit" --out "$out"
  touch "$out/done"
done
