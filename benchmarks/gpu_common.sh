#!/usr/bin/env bash
# Shared by the GPU training scripts (train_bundled_gpu.sh, train_further_gpu.sh); source it.
# A GPU machine starts bare: its own Python with torch, plus the wheels in .whl/ for what it lacks
# (such as `datasets`); corpora come from .device_data/ (an ignored copy of ../shared/data).

gpu_setup() {  # the wheels, the environment, and a line saying what this machine runs
  if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  export HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=/tmp/hf-datasets OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
  python3 -c "import torch, datasets, pyarrow, lstm_model.train; print('torch', torch.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, 'cuda', torch.cuda.is_available())" || exit 1
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
}

pack_runs() {  # SWEEP OUT NAME...: each run's files (fp16 weights, if any) in one tar of 15 MB parts in OUT
  local sweep=$1 out=$2 pack=runs/pack name
  shift 2
  rm -rf "$pack" && mkdir -p "$pack"
  for name in "$@"; do
    [ -d "$sweep/$name" ] || continue
    mkdir -p "$pack/$name"
    cp "$sweep/$name"/{config.json,README.md,metrics.jsonl,final_metrics.json,int8.json,train_config.json} "$pack/$name/" 2>/dev/null
    cp "$sweep/$name.log" "$pack/$name/train.log"
    [ -f "$sweep/$name/model.safetensors" ] && python3 -c "
import sys; from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1]); save_file({k: v.half().contiguous() for k, v in w.items()}, sys.argv[2], metadata={'format': 'pt'})
" "$sweep/$name/model.safetensors" "$pack/$name/model.safetensors"
  done
  cp "$sweep/summary.txt" "$out/summary.txt"
  tar -C "$pack" -cf - . | split -b 15m -d - "$out/pack.tar."
  ls -la "$out"
  cat "$sweep/summary.txt"
}
