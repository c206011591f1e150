#!/usr/bin/env bash
# A curriculum on generated bAbI-form conversations (`python -m lstm_model.memory_tasks`) that teaches a
# small LSTM to bind names to places, then tasks 1, 2, 6 and 7, one small step outward at a time. Each
# stage makes its data, then trains with `python -m lstm_model.train` starting from the stage before it
# (`--init-from`). A stage that finished is skipped; one that was stopped (SIGTERM saves a checkpoint)
# is resumed. The line below made the generated-stories model objaskbp2 (`git show 4b60ca4:assets/babi`),
# which benchmarks/stages/babi-s1.json starts from; today's assets/babi comes from benchmarks/curriculum.py.
#
#   nohup bash benchmarks/babi_curriculum.sh drill pair1 pair2 pair3 four1 four2 roll story1 carry carry2 \
#     obj1 obj2 obj3 objlong noteswait objroll objaskbp objaskbp2 > runs/curriculum.log 2>&1 &
#
# Stages on that line (half of each stage's probes past the drill are drills, DRILL_SHARE):
#   drill      from scratch: two people, one move each, both asked
#   pair1-3    two people, paired probes: 0-1 facts before and 0-2 moves between, 0-2 / 0-4, 0-3 / 0-8
#   four1-2    four people, 0-3 facts before, 0-8 then 0-20 moves between
#   roll       four people, 0-20 between, the drills roll calls (four move, all four asked)
#   story1     tasks 1, 2, 6, 7 as stories: up to 40 facts, 1-3 a message, a question after every message,
#              40% probes (to 40 back), half of those roll calls
#   carry(2)   80% carrying drills (--carry-share 0.8: people get and drop things, every object and
#              carrier asked), the rest as story1; carry2 the same drawn afresh
#   obj1-3     object drills from one person up (--carry-people 1, 2, 4; 2-4, 2-6, 2-8 facts, half moves)
#   objlong    (from obj3) drills of 2-12 facts
#   noteswait  (from objlong) acknowledgements that note where each object now is (--notes), drills
#              waiting 0-16 moves before their questions (--carry-wait 16)
#   objroll    (from noteswait) waits of 0-30 idle moves (--carry-wait-idle), 30% object roll calls
#              (--object-share 0.3)
#   objaskbp   (from objroll) the drills also ask where an object is after half their facts
#              (--carry-ask 0.5), backpropagation through 1,024 characters
#   objaskbp2  (from objaskbp) the same drawn afresh at lr 1e-3
# Stages off that line, each from the stage its FROM entry names: four3, story2, obj4, objmix,
# objlong2, wide (grown to 2 x 256 by --widen), objlong3, objwait, widewait, objask, objwait2, notes,
# notesidle, objroll2, objroll3, objfar, objask2. Each stage's time, lr, window and data flags are in
# STAGE below; its data seed in DATA_SEED.
# Environment: RUNS (folder of the stages, default runs/curriculum), THREADS (torch threads,
# default 1), SEED (default 7), BATCH (default 16), DRILL_SHARE (default 0.5), HIDDEN (the width
# from scratch, default 128), DEVICE (default cpu; cuda: the stage times then buy many more steps),
# VOCAB (the model whose characters every stage uses, default assets/babi; the line above used the
# 36 characters of `git show 4b60ca4:assets/babi`), and per stage SECONDS_<stage> (its --time-limit),
# LR_<stage> and SEQ_<stage> (characters per backpropagation window).
set -euo pipefail
RUNS=${RUNS:-runs/curriculum}
VOCAB=${VOCAB:-assets/babi}
SEED=${SEED:-7}
BATCH=${BATCH:-16}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$RUNS"
FRESH=(--turn-separator '\n' --stop-sequence '\n' --loss-on replies --conversation-state fresh --dropout 0
       --batch-size "$BATCH" --eval-every 250 --eval-batches 10 --checkpoint-every 250
       --epochs 100000 --quiet --seed "$SEED" --device "${DEVICE:-cpu}")
# Past the drill, half of each stage's probes are drills (DRILL_SHARE): the wider probes alone lost
# most of the binding the drill had taught in their first steps; with the drill kept in the mix less.
DRILL="--drill-share ${DRILL_SHARE:-0.5}"
PROBES="--tasks 1 --probe-share 1"
STORIES="--tasks 1 2 6 7 --people 4 --max-facts 40 --probe-distance 40 $DRILL"
ROLL="--drill-people 4"
CARRY="$STORIES $ROLL --question-rate 1 --probe-share 0.3 --carry-share 0.8 --stories 30000"
# The object drills: carrying drills from one person up, half their facts moves (objects carried
# along and left behind), for task 2.
OBJ="$CARRY --carry-moves 0.5"
# objroll's mix: the object drills waiting up to 30 idle moves, with notes, 30% object roll calls.
ROLLOBJ="$OBJ --carry-people 4 --carry-facts 12 --carry-wait 30 --carry-wait-idle --notes --object-share 0.3"
# Each stage starts from the one listed before it in ORDER (or the one FROM names): seconds, lr,
# seq-len, then its data's flags.
ORDER=(drill pair1 pair2 pair3 four1 four2 roll story1 carry carry2 obj1 obj2 obj3 obj4)
declare -A STAGE=(
  [drill]="1500 3e-3 256 $PROBES --people 2 --probe-distance 1 --probe-min-distance 1 --probe-lead 0 --stories 40000"
  [pair1]="600 1e-3 256 $PROBES $DRILL --people 2 --probe-distance 2 --probe-lead 1 --stories 30000"
  [pair2]="600 1e-3 256 $PROBES $DRILL --people 2 --probe-distance 4 --probe-lead 2 --stories 30000"
  [pair3]="420 1e-3 256 $PROBES $DRILL --people 2 --probe-distance 8 --probe-lead 3 --stories 30000"
  [four1]="1800 1e-3 256 $PROBES $DRILL --people 4 --probe-distance 8 --probe-lead 3 --stories 30000"
  [four2]="900 1e-3 512 $PROBES $DRILL --people 4 --probe-distance 20 --probe-lead 3 --stories 30000"
  [roll]="1500 1e-3 512 $PROBES $DRILL $ROLL --people 4 --probe-distance 20 --probe-lead 3 --stories 30000"
  [story1]="1500 1e-3 512 $STORIES $ROLL --question-rate 1 --probe-share 0.4 --stories 30000"
  [carry]="3000 2e-3 512 $CARRY"
  [carry2]="2400 2e-3 512 $CARRY"
  [obj1]="900 2e-3 512 $OBJ --carry-people 1 --carry-facts 4"
  [obj2]="900 2e-3 512 $OBJ --carry-people 2 --carry-facts 6"
  [obj3]="1500 2e-3 512 $OBJ --carry-people 4 --carry-facts 8"
  [obj4]="2700 2e-3 512 $OBJ --carry-people 4 --carry-facts 8"
  [objmix]="3300 2e-3 512 $OBJ --carry-people 4 --carry-facts 8"
  [objlong]="2700 2e-3 512 $OBJ --carry-people 4 --carry-facts 12"
  [objlong2]="3000 2e-3 512 $OBJ --carry-people 4 --carry-facts 12"
  [wide]="3000 2e-3 512 $OBJ --carry-people 4 --carry-facts 12"
  [objlong3]="2100 2e-3 512 $OBJ --carry-people 4 --carry-facts 12"
  [objwait]="2100 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 16"
  [objwait2]="1800 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 16"
  [objask]="1800 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 16 --carry-ask 0.5"
  [widewait]="2700 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 16"
  [notes]="3600 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --notes"
  [noteswait]="3600 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 16 --notes"
  [notesidle]="2400 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 30 --carry-wait-idle --notes"
  [objroll]="2400 2e-3 512 $ROLLOBJ"
  [objroll2]="1200 1e-3 512 $ROLLOBJ"
  [objroll3]="2400 2e-3 512 $OBJ --carry-people 4 --carry-facts 12 --carry-wait 40 --carry-wait-idle --notes --object-share 0.5"
  [objfar]="2400 1e-3 512 $OBJ --carry-people 4 --carry-facts 16 --carry-wait 40 --carry-wait-idle --notes --object-share 0.5"
  [objask2]="2400 2e-3 512 $ROLLOBJ --carry-ask 0.5"
  [objaskbp]="2400 2e-3 1024 $ROLLOBJ --carry-ask 0.5"
  [objaskbp2]="1200 1e-3 1024 $ROLLOBJ --carry-ask 0.5"
  [four3]="900 1e-3 512 $PROBES $DRILL --people 4 --probe-distance 40 --probe-lead 3 --stories 30000"
  [story2]="1200 1e-3 512 $STORIES --probe-share 0.3 --stories 40000"
)
declare -A FROM=([four3]=four2 [story2]=story1 [objmix]=carry2 [objlong]=obj3 [objlong2]=objlong [wide]=objlong
              [objlong3]=objlong2 [objwait]=objlong2 [widewait]=wide
              [objask]=objwait [objwait2]=objwait [notes]=objlong [noteswait]=objlong
              [notesidle]=noteswait [objroll]=noteswait [objroll2]=objroll
              [objroll3]=objroll [objfar]=objroll [objask2]=objroll [objaskbp]=objroll [objaskbp2]=objaskbp)
# Stages that grow the model they start from to this many units per layer (--widen: the new units
# start silent, so nothing learned is lost).
declare -A WIDEN=([wide]=256)
# The data's random stream per stage (default 0): the carry stages' runs drew their stories with seeds 1 and 2.
declare -A DATA_SEED=([carry]=1 [carry2]=2 [obj1]=4 [obj2]=5 [obj3]=6 [obj4]=8 [objmix]=7 [objlong]=9 [objlong2]=10
                      [wide]=10 [objlong3]=11 [objwait]=11 [widewait]=11 [objask]=12 [objwait2]=12
                      [notes]=13 [noteswait]=13 [notesidle]=14 [objroll]=15 [objroll2]=16
                      [objroll3]=17 [objfar]=18 [objask2]=19 [objaskbp]=19 [objaskbp2]=20)
for ((i = 1; i < ${#ORDER[@]}; i++)); do FROM[${ORDER[i]}]=${ORDER[i - 1]}; done

for stage in "$@"; do
  [ -n "${STAGE[$stage]+x}" ] || { echo "unknown stage '$stage': choose from ${ORDER[*]} and, off that line, $(printf '%s\n' "${!STAGE[@]}" | grep -vxF "$(printf '%s\n' "${ORDER[@]}")" | sort | tr '\n' ' ')" >&2; exit 2; }
  read -r limit lr seq flags <<< "${STAGE[$stage]}"
  out="$RUNS/$stage"
  if [ -f "$out/done" ]; then echo "$stage: done already ($out)"; continue; fi
  data="$RUNS/data-$stage"
  if [ ! -d "$data" ]; then
    # shellcheck disable=SC2086  # the flags are meant to split
    python -m lstm_model.memory_tasks --out "$data" $flags \
      --validation 200 --test 200 --seed "${DATA_SEED[$stage]:-0}" 2>&1 | { grep -v "Saving" || true; }
  fi
  limit_var="SECONDS_$stage" lr_var="LR_$stage" seq_var="SEQ_$stage"  # the environment's, if set
  limit=${!limit_var:-$limit} lr=${!lr_var:-$lr} seq=${!seq_var:-$seq}
  if [ -f "$out/training_state.safetensors" ]; then
    start=(--resume)
  elif [ -z "${FROM[$stage]:-}" ]; then
    start=(--vocab-from "$VOCAB" --hidden-size "${HIDDEN:-128}" --embed-dim 32 --num-layers 2)
  else
    from=${FROM[$stage]}
    [[ $from == */* ]] || from="$RUNS/$from"  # a stage's name, or a model folder
    start=(--init-from "$from" --vocab-from "$VOCAB")
    [ -z "${WIDEN[$stage]:-}" ] || start+=(--widen "${WIDEN[$stage]}")
  fi
  echo "$stage: $(date -u +%H:%M:%S) training $limit s at lr $lr into $out"
  python -m lstm_model.train --dataset "$data" "${start[@]}" "${FRESH[@]}" --lr "$lr" --seq-len "$seq" --warmup-steps 100 \
    --time-limit "$limit" --out "$out"
  touch "$out/done"
done
