"""Int8 generation steps and the ONNX Runtime step (lstm_model/step.py): loss and speed.

    python benchmarks/int8.py --model assets/shakespeare --text SHAKESPEARE_TXT

Quality: the held-out text (the last --val-fraction of the file, as the training CLI holds out)
read with fp32 steps and with int8 steps on the serving engine (`check_int8`: 32 pieces
read side by side, each from a fresh state, every character scored); the rule is that int8 may
serve only if the loss rises by <= 0.01 nats/char.

Speed: one reply alone (batch 1, in a worker thread as the app without batching) and 16 replies
batched by one Decoder, each with three steps run back to back in each repetition: the torch
step (TorchStep, fp32), ONNX Runtime fp32 and ONNX Runtime int8 (OrtStep), each a Serving;
medians of --reps and the medians of the per-repetition ratios to the torch step and of int8 to
fp32 on ONNX Runtime. Torch and ONNX Runtime use one thread each, as app.py runs them.
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

from lstm_model.evaluate import check_int8  # noqa: E402
from lstm_model.serving import Serving  # noqa: E402


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

    configs = [("torch", "off"), ("onnxruntime", "off"), ("onnxruntime", "on")]
    servings = [(Serving(model, engine=e, int8=i, threads=1), Serving(model, engine=e, int8=i, threads=1, batching=True))
                for e, i in configs]
    for alone, batched in servings:  # build (and quantise) every step before any timing
        alone.step(), batched.step()
    runs = {"alone": [], "batched": []}
    for _ in range(args.reps):
        for name in runs:
            speeds = []
            for alone, batched in servings:
                if name == "alone":
                    speeds.append(args.chars / one_after_another(alone, [0], args.chars))
                else:
                    speeds.append(together(batched, args.sessions, args.chars))
            runs[name].append(speeds)
    for name, reps in runs.items():
        what = "one reply alone" if name == "alone" else f"{args.sessions} replies batched"
        med = [statistics.median(r[k] for r in reps) for k in range(3)]
        print(f"{what}: torch fp32 {med[0]:,.0f}, onnxruntime fp32 {med[1]:,.0f}, onnxruntime int8 {med[2]:,.0f} chars/s; "
              f"vs torch fp32: {statistics.median(r[1] / r[0] for r in reps):.2f}x, {statistics.median(r[2] / r[0] for r in reps):.2f}x; "
              f"int8 / fp32 on onnxruntime {statistics.median(r[2] / r[1] for r in reps):.2f}x (medians of {args.reps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
