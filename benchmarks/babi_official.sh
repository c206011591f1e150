#!/usr/bin/env bash
# The bundled memory model (assets/babi) from bAbI's own training stories, in three stages, each
# starting from the one before (--init-from): the stages the bundled model came out of.
#
#   bash benchmarks/babi_official.sh BABI_DIR_OR_HUB_ID [stage ...]     (default: s1 s2 s3)
#
#   s1  from the previous generated-stories model (FROM, default assets/babi: the one before this
#       stage was bundled, git show 4b60ca4:assets/babi), messages read in lower case
#       (--normalize lower), notes that name places only when they change; a 3,000 s schedule,
#       stopped by hand at step 2,566 (Ctrl-C saves the checkpoint the next stage starts from)
#   s2  "I don't know." only for what was never told (not for "before" a place an object never
#       came to), task 3 four times; a 3,600 s schedule stopped by hand at step 8,250
#   s3  notes by the fact's form alone (every get, drop, hand-over and carrying move noted), 400
#       generated stories a task of up to 60 facts; 1,800 s, 8,896 steps: the bundled model.
#       WIDE=256 grows the layers first (2 x 256 at 1,800 s: 2,757 steps, 0.0127 nats/char on the
#       held-out replies against the 2 x 128's 0.0089)
#
# Each stage's data is built by `python -m lstm_model.babi_qa` (the last 10% of each training file
# held out); every stage adds 3,000 task-1/6 distance probes up to 60 facts back. The vocabulary is
# the union of the old model's and the new data's characters (a one-step model made from them,
# only for --vocab-from). Times are one thread each on a 2-vCPU machine (DEVICE=cuda where a GPU is
# lent). The data stages' note and question rules are the code's of their time: git log
# lstm_model/babi_qa.py; rerunning a stage today builds its data with today's rules.
set -euo pipefail
BABI=${1:?"give the folder of bAbI's *_train.txt files, or facebook/babi_qa"}
shift
RUNS=${RUNS:-runs/babi-official}
FROM=${FROM:-assets/babi}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$RUNS"
COMMON=(--turn-separator '\n' --stop-sequence '\n' --normalize lower --loss-on replies --conversation-state fresh
        --dropout 0 --batch-size 16 --seq-len 512 --epochs 100000 --eval-every 250 --eval-batches 10
        --checkpoint-every 250 --quiet --device "${DEVICE:-cpu}")
declare -A DATA=(
  [s1]="--notes --dont-know 0.1 --repeat-task3 2 --probes 3000 --probe-distance 60"
  [s2]="--notes --dont-know 0.1 --repeat-task3 4 --probes 3000 --probe-distance 60"
  [s3]="--notes --dont-know 0.1 --repeat-task3 3 --probes 3000 --probe-distance 60 --generated 400 --generated-facts 60"
)
declare -A TRAIN=([s1]="--lr 2e-3 --warmup-steps 100 --time-limit 3000 --seed 7"
                  [s2]="--lr 2e-3 --warmup-steps 50 --time-limit 3600 --seed 8"
                  [s3]="--lr 1.5e-3 --warmup-steps 50 --time-limit 1800 --seed 9")
declare -A PREVIOUS=([s2]=s1 [s3]=s2)

vocab="$RUNS/vocab"
if [ ! -f "$vocab/config.json" ]; then  # the old model's characters and the new data's
  python -m lstm_model.babi_qa --babi "$BABI" --out "$RUNS/data-s1" ${DATA[s1]} >/dev/null
  python - "$FROM" "$RUNS/data-s1" "$RUNS/vocab.txt" <<'EOF'
import json, sys, datasets
chars = set(json.load(open(f"{sys.argv[1]}/config.json"))["vocab"])
for m in datasets.load_from_disk(sys.argv[2])["train"]["messages"]:
    chars.update("".join(x["content"].lower() if x["role"] == "user" else x["content"] for x in m) + "\n")
open(sys.argv[3], "w").write("".join(sorted(chars)) * 200)
EOF
  python -m lstm_model.train --dataset "$RUNS/vocab.txt" --out "$vocab" --max-steps 1 --hidden-size 16 --embed-dim 8 \
    --batch-size 2 --seq-len 32 --quiet --eval-batches 1 >/dev/null
fi

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(s1 s2 s3)
for stage in "${stages[@]}"; do
  [ -n "${DATA[$stage]+x}" ] || { echo "unknown stage '$stage': choose from s1 s2 s3" >&2; exit 2; }
  out="$RUNS/$stage"
  [ -d "$RUNS/data-$stage" ] || python -m lstm_model.babi_qa --babi "$BABI" --out "$RUNS/data-$stage" ${DATA[$stage]}
  if [ -f "$out/training_state.safetensors" ]; then
    start=(--resume)
  elif [ "$stage" = s1 ]; then
    start=(--init-from "$FROM" --vocab-from "$vocab")
  else
    start=(--init-from "$RUNS/${PREVIOUS[$stage]}")
  fi
  if [ "$stage" = s3 ] && [ -n "${WIDE:-}" ] && [ "${start[0]}" != --resume ]; then start+=(--widen "$WIDE"); fi
  # shellcheck disable=SC2086  # the flags are meant to split
  python -m lstm_model.train --dataset "$RUNS/data-$stage" "${start[@]}" "${COMMON[@]}" ${TRAIN[$stage]} --out "$out"
done
