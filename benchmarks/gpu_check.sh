#!/usr/bin/env bash
# Multi-process training checks on one GPU machine (a few minutes):
#   1. torchrun with one process on CUDA: training, a checkpoint, --resume to a later step, and the
#      int8 serving check at the end (on a CPU copy, ONNX Runtime);
#   2. torchrun with more processes than GPUs: refused with one sentence (NCCL needs one GPU per
#      process), no traceback.
# Usage: bash benchmarks/gpu_check.sh     (writes logs to $OUT, default runs/gpu-check)
# Reads Tiny Shakespeare from SHAKESPEARE_TXT; that and WHEELS: benchmarks/gpu_common.sh.
set -u
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh
need_file "$SHAKESPEARE_TXT" SHAKESPEARE_TXT
gpu_setup
RUN=/tmp/gpu-run
COMMON="--dataset $SHAKESPEARE_TXT --hidden-size 256 --batch-size 64 --seq-len 128 --eval-every 100 --eval-batches 5 --checkpoint-every 100 --quiet --out $RUN"
echo "== 1. one process on CUDA under torchrun, then --resume"
rm -rf "$RUN"
# shellcheck disable=SC2086  # the flags are meant to split
torchrun --standalone --nproc_per_node=1 -m lstm_model.train $COMMON --device cuda --max-steps 200 > "$OUT/train1.log" 2>&1
echo "exit $?"; tail -4 "$OUT/train1.log"
# shellcheck disable=SC2086
torchrun --standalone --nproc_per_node=1 -m lstm_model.train $COMMON --device cuda --max-steps 400 --resume > "$OUT/train2.log" 2>&1
echo "exit $?"; tail -4 "$OUT/train2.log"
python3 - "$RUN" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
steps = [r["step"] for r in rows if "loss" in r]
print("logged steps", steps[0], "...", steps[-1], "| first/last loss", round(rows[0].get("loss", 0), 3), round([r for r in rows if "loss" in r][-1]["loss"], 3))
print("int8.json:", open(sys.argv[1] + "/int8.json").read().replace("\n", " "))
PY
echo "== 2. two processes, one GPU: refused"
# shellcheck disable=SC2086
torchrun --standalone --nproc_per_node=2 -m lstm_model.train $COMMON --device cuda --max-steps 10 --out /tmp/gpu-run2 > "$OUT/two.log" 2>&1
echo "exit $?"; grep -c Traceback "$OUT/two.log" | sed 's/^/tracebacks: /'; grep -m2 "error" "$OUT/two.log"
