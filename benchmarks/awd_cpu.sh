#!/usr/bin/env bash
# Regularisation at equal CPU budget: the same 2 x 256 model and the same steps on The Time Machine
# (161,000 training characters, so a few minutes of CPU are enough to overfit it), with and without
# AWD-LSTM's options, several seeds; then both validation losses of each run (benchmarks/quality.py:
# stateful over the whole held-out 10%, and nanoGPT's way over 1,024 windows).
# Usage: bash benchmarks/awd_cpu.sh [steps] [seeds...]      (reads TEXT, or TIMEMACHINE_TXT: a local copy of The
#                                                           Time Machine as the d2l.ai tutorial uses it; default
#                                                           data/timemachine.txt)
#        ONLY="plain light" bash benchmarks/awd_cpu.sh 2000 1 2     (which recipes; default: all three)
#        CHARS=60000 bash benchmarks/awd_cpu.sh 1000 1 2    (the first 60,000 characters only: a corpus the
#                                                           model overfits within the budget; runs/awd_cpu_60000_1000)
#        ONLY="plain_ema awd_ema" ...   (the same runs with --ema 0.998: the moving average of the weights is
#                                        scored, and the weights themselves, the run without --ema, beside it)
set -eu
STEPS=${1:-600}; shift || true
SEEDS=${*:-1 2 3}
TEXT=${TEXT:-${TIMEMACHINE_TXT:-data/timemachine.txt}}
[ -f "$TEXT" ] || { echo "error: $TEXT not found; set TEXT to a local copy of The Time Machine." >&2; exit 2; }
OUT=runs/awd_cpu
if [ -n "${CHARS:-}" ]; then  # a shorter corpus, cut from the same text (kept under runs/, never committed)
  OUT=runs/awd_cpu_${CHARS}_$STEPS; mkdir -p "$OUT"
  head -c "$CHARS" "$TEXT" > "$OUT/corpus.txt"; TEXT=$OUT/corpus.txt
fi
COMMON="--dataset $TEXT --hidden-size 256 --embed-dim 64 --batch-size 32 --seq-len 128 --lr 3e-3 --max-steps $STEPS
        --eval-every 200 --eval-batches 10 --sample-chars 0 --device cpu --quiet --overwrite"
declare -A RECIPES=(
  [plain]="--dropout 0.2"
  [awd]="--dropout 0.2 --weight-drop 0.25 --locked-dropout 0.3 --embed-dropout 0.05"
  [light]="--dropout 0.2 --weight-drop 0.1 --locked-dropout 0.1"
  [plain_ema]="--dropout 0.2 --ema 0.998"
  [awd_ema]="--dropout 0.2 --weight-drop 0.25 --locked-dropout 0.3 --embed-dropout 0.05 --ema 0.998"
)
for seed in $SEEDS; do
  for recipe in ${ONLY:-plain awd light}; do
    out=$OUT/${recipe}_s$seed
    start=$(date +%s)
    # shellcheck disable=SC2086
    python -m lstm_model.train $COMMON ${RECIPES[$recipe]} --seed "$seed" --out "$out" 2>&1 | grep -E "Validation over" || true
    echo "$recipe seed $seed: $(( $(date +%s) - start )) s of training"
    python benchmarks/quality.py --model "$out" --text "$TEXT" --val-fraction 0.1 --samples 0 --windows 1024 | grep "validation loss"
    case $recipe in *_ema)  # the weights themselves (kept in the checkpoint): the same run without the average
      python -c "import sys; from safetensors.torch import load_file; from lstm_model import load_model
m = load_model(sys.argv[1]); state = load_file(sys.argv[1] + '/training_state.safetensors')
m.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith('model.')}); m.save_pretrained(sys.argv[1] + '/weights')" "$out"
      echo "$recipe seed $seed, the weights themselves (no average):"
      python benchmarks/quality.py --model "$out/weights" --text "$TEXT" --val-fraction 0.1 --samples 0 --windows 1024 | grep "validation loss";;
    esac
  done
done
