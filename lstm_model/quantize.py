"""`python -m lstm_model.quantize`: measure whether int8 generation steps may serve a model.

    python -m lstm_model.quantize --model assets/shakespeare --dataset SHAKESPEARE_TXT --write

Reads the held-out text (the dataset's validation split, or its last --val-fraction) with fp32
and with int8 steps (lstm_model.evaluate.check_int8) and, with --write, stores the result as the
model folder's int8.json. Training writes the same file at the end of a run. The rule that uses
it (int8 only if the loss rises by at most 0.01 nats/char) is lstm_model.serving's.
"""

from __future__ import annotations

import argparse
import os
import sys

from .checkpoint import atomic_path, write_json
from .data import DataError, encode, encode_masked, encoded_offsets, load_corpus
from .evaluate import check_int8
from .hub import INT8_CHECK_FILE, ModelLoadError, load_model, resolve_source
from .serving import MAX_LOSS_RISE

MAX_STREAMS = 4096  # pieces read side by side: each holds a recurrent state, so the memory grows with them


def _streams(text: str) -> int:
    """An argparse type: how many pieces of the text are read side by side."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_STREAMS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_STREAMS:,} (got {value:,})")
    return value


def _fraction(text: str) -> float:
    """An argparse type: a share of the text, strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, both excluded (got {text})")
    return value


def main(argv=None) -> int:
    """A bad argument ends in one sentence and status 2 before the model is read; a failure in one
    sentence and status 1."""
    p = argparse.ArgumentParser(prog="python -m lstm_model.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local folder or Hub repo id (default: the bundled model)")
    p.add_argument("--dataset", required=True, help="held-out text: a dataset id, file or folder, as the training CLI takes")
    p.add_argument("--val-fraction", type=_fraction, default=0.1, help="held-out fraction when the dataset has no validation split")
    p.add_argument("--streams", type=_streams, default=32,
                   help="pieces of the text read side by side (default 32; a chat dataset: a conversation a row)")
    p.add_argument("--loss-on", choices=["all", "replies"], default="all",
                   help="for a chat dataset (a messages column): score every character or the replies only, as the "
                        "model was trained (default all)")
    p.add_argument("--write", action="store_true", help=f"write {INT8_CHECK_FILE} into the (local) model folder")
    args = p.parse_args(argv)
    folder = None
    if args.write:  # where int8.json goes, checked before the measurement, which takes a while
        try:
            folder = resolve_source(args.model)[0]
        except ModelLoadError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if not os.path.isdir(folder):
            p.error(f"--write needs a local model folder; {args.model} is not one (leave --write out for a Hub model)")
        try:  # a temporary file made and removed: the folder takes new files (write_json makes one)
            os.remove(atomic_path(os.path.join(folder, INT8_CHECK_FILE)))
        except OSError as err:
            print(f"error: cannot write {INT8_CHECK_FILE} into {folder} ({err.strerror or err}); make the folder "
                  "writable or leave --write out.", file=sys.stderr)
            return 1
    try:
        model = load_model(args.model)
        corpus = load_corpus(args.dataset, val_fraction=args.val_fraction,
                             chat=(model.turn_separator, model.stop_sequence, model.normalize))  # a chat as the model reads it
        if args.loss_on == "replies" and corpus.val_mask is not None:
            ids, mask = encode_masked(model.vocab, corpus.val, corpus.val_mask)
        else:
            ids, mask = encode(model.vocab, corpus.val), None
        # a chat dataset: each conversation from a fresh state, as the chat and training read it
        starts = None if corpus.val_starts is None else encoded_offsets(model.vocab, corpus.val, corpus.val_starts)
        check = check_int8(model, ids, streams=args.streams, text=f"{corpus.val_from} of {args.dataset}", mask=mask,
                           starts=starts)
    except (ModelLoadError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    verdict = "int8 may serve this model" if check["ok"] else "int8 stays off for this model"
    print(f"fp32 steps: {check['fp32_loss']:.4f} nats/char; int8 steps: {check['int8_loss']:.4f} nats/char; "
          f"rise {check['loss_rise']:+.4f} (limit {MAX_LOSS_RISE}) over {check['characters']:,} characters: {verdict}.")
    if folder is not None:
        path = os.path.join(folder, INT8_CHECK_FILE)
        try:
            write_json(path, check)
        except OSError as err:
            print(f"error: could not write {path} ({err.strerror or err}); the measurement is above.", file=sys.stderr)
            return 1
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
