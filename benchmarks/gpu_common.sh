#!/usr/bin/env bash
# Shared by the GPU scripts (gpu_check.sh, train_bundled_gpu.sh, train_further_gpu.sh); source it.
# Environment they all read:
#   SHAKESPEARE_TXT  a local copy of the text of the Hub dataset karpathy/tiny_shakespeare
#                    (default data/tinyshakespeare.txt; data/ is ignored by git)
#   TIMEMACHINE_TXT  a local copy of The Time Machine as the d2l.ai tutorial uses it
#                    (default data/timemachine.txt)
#   WHEELS           a folder of wheels to install first (into /tmp/site) for what the machine's
#                    Python lacks, such as `datasets`; unset: nothing is installed
#   DEVICE           cuda (default), or cpu for a dry run
#   BABI_STORIES     generated bAbI-chat conversations for the chat runs (default 60000)
SHAKESPEARE_TXT=${SHAKESPEARE_TXT:-data/tinyshakespeare.txt}
TIMEMACHINE_TXT=${TIMEMACHINE_TXT:-data/timemachine.txt}

gpu_setup() {  # the wheels, the environment, and a line saying what this machine runs
  if [ -n "${WHEELS:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl &&
      export PYTHONPATH=/tmp/site
  fi
  export HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=/tmp/hf-datasets OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
  python3 - <<'PY' || exit 1
import torch, datasets, pyarrow, lstm_model.train  # noqa: F401
try:
    import onnxruntime
    ort = onnxruntime.__version__
except ImportError:
    ort = "none"
gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
print("torch", torch.__version__, "| cuda", torch.cuda.is_available(), gpus, "GPU(s)",
      torch.cuda.get_device_name(0) if gpus else "", "| datasets", datasets.__version__,
      "| pyarrow", pyarrow.__version__, "| onnxruntime", ort)
PY
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
}

need_file() {  # PATH VARIABLE: stop with one sentence unless the corpus file is there
  [ -f "$1" ] || { echo "error: $1 not found; set $2 to a local copy of the corpus." >&2; exit 2; }
}

babi_chat_data() {  # OUT [FLAG...]: generated bAbI-chat conversations (lstm_model.memory_tasks), seed 0
  local out=$1
  shift
  python3 -m lstm_model.memory_tasks --out "$out" --stories "${BABI_STORIES:-60000}" --validation 300 --test 300 \
    --seed 0 "$@" 2>&1 | grep -v Saving
}

sweep_run() {  # SWEEP NAME TIMEOUT FLAGS: one training run into SWEEP/NAME, its log, flags and seconds beside it
  local sweep=$1 name=$2 timeout=$3 flags=$4 start
  rm -rf "${sweep:?}/$name"
  echo "$flags" > "$sweep/$name.flags"
  start=$(date +%s)
  # shellcheck disable=SC2086  # the flags are meant to split
  timeout -s TERM "$timeout" python3 -m lstm_model.train $flags --out "$sweep/$name" > "$sweep/$name.log" 2>&1
  echo "$(( $(date +%s) - start ))" > "$sweep/$name.seconds"
}

sweep_summary() {  # SWEEP: each run's flags, time, last log lines, traceback and final metrics in SWEEP/summary.txt
  local sweep=$1 log name
  for log in "$sweep"/*.log; do
    [ -f "$log" ] || continue
    name=$(basename "$log" .log)
    echo "== $name ($(cat "$sweep/$name.seconds" 2>/dev/null) s): $(cat "$sweep/$name.flags" 2>/dev/null)"
    grep -E "^step|Training a|Validation over|Int8|rror" "$log" | tail -5; grep -A12 Traceback "$log" | head -14
    cat "$sweep/$name/final_metrics.json" 2>/dev/null; echo
  done > "$sweep/summary.txt"
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
