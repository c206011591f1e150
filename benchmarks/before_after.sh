#!/usr/bin/env bash
# The speed benchmarks of two revisions side by side on one machine: a checkout of REV (with its
# own benchmark scripts) and this working tree take turns, benchmark by benchmark, ROUNDS times,
# so that both sides see the same moments of a noisy machine.
#
#   bash benchmarks/before_after.sh REV [ROUNDS]      # e.g. bash benchmarks/before_after.sh HEAD~1 2
set -euo pipefail
REV=${1:?usage: bash benchmarks/before_after.sh REV [ROUNDS]}
ROUNDS=${2:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=$(mktemp -d)/before
git -C "$ROOT" worktree add --detach "$BEFORE" "$REV" > /dev/null
trap 'git -C "$ROOT" worktree remove --force "$BEFORE"' EXIT
BENCHMARKS=(
  "python benchmarks/generate_speed.py --reps 5"
  "python benchmarks/serve_batch.py --sessions 1 16 --reps 5 --one-user-pairs 5"
  "python benchmarks/app_latency.py"
  "python benchmarks/load.py"
)
for round in $(seq "$ROUNDS"); do
  for bench in "${BENCHMARKS[@]}"; do
    for side in before after; do
      if [ "$side" = before ]; then dir=$BEFORE; label=$REV; else dir=$ROOT; label="working tree"; fi
      echo "== round $round, $side ($label): $bench"
      (cd "$dir" && $bench)
    done
  done
done
