#!/usr/bin/env bash
# Issue 7's GPU checks, run on one GPU machine (a few minutes):
#   1. torchrun with one process on CUDA: training, a checkpoint, --resume to a later step, and the
#      int8 serving check at the end (on a CPU copy, ONNX Runtime);
#   2. torchrun with more processes than GPUs: refused with one sentence (NCCL needs one GPU per
#      process), no traceback.
# Corpora are read from .device_data/ (an ignored copy of ../shared/data, never committed); wheels
# the device image lacks (datasets and its needs) from .whl/.
# Usage: bash benchmarks/gpu_check.sh     (writes logs to $OUT, default runs/gpu-check)
set -u
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=/tmp/hf-datasets OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
python3 -c "import torch, datasets, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count(), 'GPU(s):', torch.cuda.get_device_name(0), '| datasets', datasets.__version__, '| onnxruntime', onnxruntime.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
RUN=/tmp/gpu-run
COMMON="--dataset .device_data/tinyshakespeare.txt --hidden-size 256 --batch-size 64 --seq-len 128 --eval-every 100 --eval-batches 5 --checkpoint-every 100 --quiet --out $RUN"
echo "== 1. one process on CUDA under torchrun, then --resume"
rm -rf "$RUN"
torchrun --standalone --nproc_per_node=1 -m lstm_model.train $COMMON --device cuda --max-steps 200 > "$OUT/train1.log" 2>&1
echo "exit $?"; tail -4 "$OUT/train1.log"
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
torchrun --standalone --nproc_per_node=2 -m lstm_model.train $COMMON --device cuda --max-steps 10 --out /tmp/gpu-run2 > "$OUT/two.log" 2>&1
echo "exit $?"; grep -c Traceback "$OUT/two.log" | sed 's/^/tracebacks: /'; grep -m2 "error" "$OUT/two.log"
