"""Int8 generation steps (lstm_model/quantize.py): the loss they cost and the speed they give.

    python benchmarks/int8.py --model assets/shakespeare --text ../shared/data/tinyshakespeare.txt

Quality: the held-out text (the last --val-fraction of the file, as the training CLI holds out)
read with fp32 steps and with int8 steps through the serving Stepper (`check_int8`: 32 pieces
read side by side, each from a fresh state, every character scored); the rule is that int8 may
serve only if the loss rises by <= 0.01 nats/char.

Speed: one reply alone (batch 1, in a worker thread as the app without batching) and 16 replies
batched by one Decoder, each with fp32 and with int8 steps, run back to back in each repetition;
medians of --reps and the median of the per-repetition int8 / fp32 ratios. Torch uses one thread,
as app.py sets it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from quality import held_out, held_out_arguments  # noqa: E402
from serve_batch import one_after_another, together  # noqa: E402
from lstm_model.batching import Decoder  # noqa: E402
from lstm_model.generate import Stepper  # noqa: E402
from lstm_model.quantize import check_int8  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    held_out_arguments(p)
    p.add_argument("--chars", type=int, default=300, help="characters per reply in the speed runs")
    p.add_argument("--sessions", type=int, default=16, help="replies batched together in the speed runs")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, corpus, ids = held_out(args)
    check = check_int8(model, ids, text=f"{corpus.val_from} of {args.text}")
    print(f"model {args.model or 'bundled default'}: {model.num_parameters():,} parameters, torch {torch.__version__}")
    print(f"held-out {corpus.val_from} ({check['characters']:,} characters, {check['streams']} streams): "
          f"fp32 steps {check['fp32_loss']:.4f}, int8 steps {check['int8_loss']:.4f} nats/char, "
          f"rise {check['loss_rise']:+.4f} (limit {check['max_loss_rise']}): int8 {'allowed' if check['ok'] else 'refused'}")

    decoder = Decoder(model)
    for int8 in (False, True):  # build (and quantise) both steppers before any timing
        model.serve_int8 = int8
        Stepper.for_model(model)
    runs = {"alone": [], "batched": []}
    for _ in range(args.reps):
        for name in runs:
            pair = []
            for int8 in (False, True):
                model.serve_int8 = int8
                if name == "alone":
                    pair.append(args.chars / one_after_another(model, [0], args.chars))
                else:
                    pair.append(together(model, decoder, args.sessions, args.chars))
            runs[name].append(pair)
    for name, pairs in runs.items():
        what = "one reply alone" if name == "alone" else f"{args.sessions} replies batched"
        print(f"{what}: fp32 {statistics.median(a for a, _ in pairs):,.0f} chars/s, "
              f"int8 {statistics.median(b for _, b in pairs):,.0f} chars/s, "
              f"int8 / fp32 = {statistics.median(b / a for a, b in pairs):.2f}x (medians of {args.reps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
