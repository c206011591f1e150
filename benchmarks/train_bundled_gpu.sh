#!/usr/bin/env bash
# The tuning sweep that produced the bundled models (issue 5), run on one GPU through the
# workplace's device tool: several `python -m lstm_model.train` runs side by side, then the best
# Tiny Shakespeare run (by whole-split validation loss) and the Time Machine run are copied to $OUT.
# Corpora are read from .device_data/ (an ignored copy of ../shared/data, never committed).
# Usage: bash benchmarks/train_bundled_gpu.sh [seconds per run]
set -u
LIMIT=${1:-400}
OUT=${OUT:-runs/gpu-out}
mkdir -p "$OUT" runs/sweep
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=/tmp/hf-datasets OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
python3 -c "import torch, datasets, pyarrow; print('torch', torch.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, torch.cuda.is_available())" || exit 1
TS=.device_data/tinyshakespeare.txt
TM=.device_data/timemachine.txt
COMMON="--device ${DEVICE:-cuda} --eval-every 300 --eval-batches 10 --quiet --warmup-steps 100"
declare -A RUNS=(
  [s600_e128_d45_wd]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.45 --weight-decay 0.1 --batch-size 128 --seq-len 256 --lr 3e-3 --epochs 70"
  [s600_e128_d55_wd]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.55 --weight-decay 0.1 --batch-size 128 --seq-len 256 --lr 3e-3 --epochs 80"
  [s600_e128_d50_wd_lr2]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.5 --weight-decay 0.1 --batch-size 128 --seq-len 256 --lr 2e-3 --epochs 80"
  [s512_e128_d40_wd]="--dataset $TS --hidden-size 512 --embed-dim 128 --dropout 0.4 --weight-decay 0.1 --batch-size 128 --seq-len 256 --lr 3e-3 --epochs 70"
  [l3_448_e128_d40_wd]="--dataset $TS --hidden-size 448 --num-layers 3 --embed-dim 128 --dropout 0.4 --weight-decay 0.1 --batch-size 128 --seq-len 256 --lr 3e-3 --epochs 70"
  [s600_e128_d45_wd_t128]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.45 --weight-decay 0.1 --batch-size 128 --seq-len 128 --lr 3e-3 --epochs 50"
  [s600_e128_d45_wd_b64]="--dataset $TS --hidden-size 600 --embed-dim 128 --dropout 0.45 --weight-decay 0.1 --batch-size 64 --seq-len 256 --lr 2e-3 --epochs 40"
  [tm_384]="--dataset $TM --hidden-size 384 --embed-dim 64 --dropout 0.5 --weight-decay 0.1 --batch-size 32 --seq-len 256 --lr 2e-3 --epochs 60"
)
for name in "${!RUNS[@]}"; do
  rm -rf "runs/sweep/$name"
  ( start=$(date +%s)
    timeout -s TERM "$LIMIT" python3 -m lstm_model.train ${RUNS[$name]} $COMMON --out "runs/sweep/$name" > "runs/sweep/$name.log" 2>&1
    if [ ! -f "runs/sweep/$name/final_metrics.json" ] && [ -f "runs/sweep/$name/training_state.safetensors" ]; then
      step=$(python3 -c "import json,sys; from safetensors import safe_open; f=safe_open('runs/sweep/$name/training_state.safetensors','pt'); print(json.loads(f.metadata()['json'])['step'])")
      echo "cut at step $step by the time limit; finishing there" >> "runs/sweep/$name.log"
      [ "$step" -gt 0 ] && python3 -m lstm_model.train --out "runs/sweep/$name" --resume --max-steps "$step" --quiet >> "runs/sweep/$name.log" 2>&1
    fi
    echo "$(( $(date +%s) - start ))" > "runs/sweep/$name.seconds" ) &
done
wait
{
  for name in "${!RUNS[@]}"; do
    echo "== $name: ${RUNS[$name]} ($(cat runs/sweep/$name.seconds 2>/dev/null) s)"
    grep -E "^step|Validation over|cut at|rror" "runs/sweep/$name.log" | tail -5; grep -A12 Traceback "runs/sweep/$name.log" | head -14
    cat "runs/sweep/$name/final_metrics.json" 2>/dev/null; echo
  done
} > "$OUT/summary.txt"
best=$(python3 - <<'PY'
import json, glob, os
scores = []
for path in glob.glob("runs/sweep/*/final_metrics.json"):
    name = path.split("/")[2]
    if name.startswith("tm_"):
        continue
    scores.append((json.load(open(path))["val_loss_full"], name))
print(min(scores)[1] if scores else "")
PY
)
echo "best: $best" >> "$OUT/summary.txt"
mkdir -p "$OUT/best" "$OUT/tm"
[ -n "$best" ] && cp runs/sweep/$best/{config.json,model.safetensors,README.md,metrics.jsonl} "$OUT/best/"
cp runs/sweep/tm_384/{config.json,model.safetensors,README.md} "$OUT/tm/" 2>/dev/null
cat "$OUT/summary.txt"
