"""Int8 serving on CPU: int8 generation steps on ONNX Runtime, on only where it is measured.

The int8 step (lstm_model.onnx_step) multiplies the recurrent matrices and the head in integers:
each weight matrix quantised once, one scale per output column; the input H (always within
[-1, 1]) quantised with the fixed scale of that range, so rows do not depend on one another. The
lookup table of layer 0, the gates and the state stay fp32. Prompts read by nn.LSTM, the memory
panel's gate traces and training stay fp32: int8 changes only the steps that write replies.

The rule: a model is served in int8 only if, on held-out text, its loss with int8 steps is at
most `MAX_LOSS_RISE` (0.01 nats/char) above its loss with fp32 steps. `check_int8` measures both
through the same engine that serves; training writes the result to the model folder as
`int8.json` (pushed with the model), and this module's CLI measures any model:

    python -m lstm_model.quantize --model assets/shakespeare --dataset ../shared/data/tinyshakespeare.txt --write

`resolve_int8(model, "auto")` (the app's and the CLI sampler's default) switches int8 on when the
model carries a passing `int8.json`; "on" forces it, "off" never. Int8 needs onnxruntime (in
requirements.txt); without it every step is fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
from torch import nn

MAX_LOSS_RISE = 0.01  # nats/char
CHECK_FILE = "int8.json"
MODES = ("auto", "on", "off")


def int8_available(model) -> bool:
    """Int8 steps need the model on CPU and ONNX Runtime (lstm_model.onnx_step)."""
    from .generate import step_engine

    return step_engine(model) == "onnxruntime"


@torch.no_grad()
def step_loss(model, ids: torch.Tensor, int8: bool, streams: int = 32) -> tuple[float, int]:
    """Loss (nats/char) of `ids` read with the serving step (fp32 or int8), one character a step.

    The text is cut into `streams` contiguous pieces read side by side, each from a fresh state,
    every character scored (the first from the fresh state). Returns (loss, characters scored).
    """
    from .generate import make_stepper, step_engine

    stepper = make_stepper(model, step_engine(model), int8)
    streams = max(1, min(streams, ids.numel()))
    length = ids.numel() // streams
    x = ids[: streams * length].view(streams, length)
    state = model.begin_state(streams, device="cpu")
    logits = model.logits_from_state(state)
    total = 0.0
    for t in range(length):
        total += nn.functional.cross_entropy(logits, x[:, t], reduction="sum").item()
        if t + 1 < length:
            logits, state = stepper.step(x[:, t], state)
    return total / (streams * length), streams * length


def check_int8(model, ids: torch.Tensor, streams: int = 32, text: str = "", max_chars: int = 1_000_000) -> dict:
    """Measure the loss of fp32 and int8 steps on the same held-out ids (at most `max_chars` of
    them, from the start); `ok` if the rise is <= MAX_LOSS_RISE."""
    if not int8_available(model):
        raise ValueError("Int8 steps need the model on CPU and onnxruntime (pip install onnxruntime onnx).")
    ids = ids[:max_chars]
    fp32, count = step_loss(model, ids, int8=False, streams=streams)
    int8, _ = step_loss(model, ids, int8=True, streams=streams)
    rise = int8 - fp32
    return {
        "fp32_loss": round(fp32, 6),
        "int8_loss": round(int8, 6),
        "loss_rise": round(rise, 6),
        "max_loss_rise": MAX_LOSS_RISE,
        "ok": bool(math.isfinite(rise) and rise <= MAX_LOSS_RISE),
        "characters": count,
        "streams": streams,
        "text": text,
        "engine": "onnxruntime " + _onnxruntime_version(),
        "torch": torch.__version__,
    }


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def write_check(folder: str | os.PathLike, check: dict) -> str:
    """Write int8.json into a model folder, atomically like the rest of it."""
    from .train import write_json

    path = os.path.join(folder, CHECK_FILE)
    write_json(path, check)
    return path


def read_check(path: str | os.PathLike | None) -> dict | None:
    """The int8 check in a file, or None when there is none or it cannot be read as one."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            check = json.load(f)
        rise = float(check["loss_rise"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return check if isinstance(check, dict) and math.isfinite(rise) else None


def resolve_int8(model, mode: str = "auto") -> tuple[bool, str]:
    """Switch int8 steps on or off for `model` (sets `model.serve_int8` and `.serve_int8_reason`);
    returns (on, why)."""
    if mode not in MODES:
        raise ValueError(f"int8 mode must be one of {', '.join(MODES)}; got {mode!r}.")
    check = getattr(model, "int8_check", None)
    if mode == "off":
        on, why = False, "fp32 steps: int8 turned off"
    elif not int8_available(model):
        on, why = False, "fp32 steps: int8 needs the model on CPU and onnxruntime"
    elif mode == "on":
        on, why = True, "int8 steps, forced on" + (f" (measured loss rise {check['loss_rise']:+.4f} nats/char)" if check
                                                  else " (not measured for this model)")
    elif check is None:
        on, why = False, "fp32 steps: int8 not measured for this model (python -m lstm_model.quantize --write)"
    elif check["loss_rise"] <= MAX_LOSS_RISE:
        on, why = True, f"int8 steps: measured loss rise {check['loss_rise']:+.4f} nats/char <= {MAX_LOSS_RISE}"
    else:
        on, why = False, f"fp32 steps: int8 would raise the loss by {check['loss_rise']:+.4f} nats/char > {MAX_LOSS_RISE}"
    model.serve_int8, model.serve_int8_reason = on, why
    return on, why


def main(argv=None) -> int:
    from .data import DataError, encode, load_corpus
    from .hub import ModelLoadError, default_model_path, load_model

    p = argparse.ArgumentParser(prog="python -m lstm_model.quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="local folder or Hub repo id (default: the bundled model)")
    p.add_argument("--dataset", required=True, help="held-out text: a dataset id, file or folder, as the training CLI takes")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction when the dataset has no validation split")
    p.add_argument("--streams", type=int, default=32, help="pieces of the text read side by side (default 32)")
    p.add_argument("--write", action="store_true", help=f"write {CHECK_FILE} into the (local) model folder")
    args = p.parse_args(argv)
    try:
        model = load_model(args.model)
        corpus = load_corpus(args.dataset, val_fraction=args.val_fraction)
    except (ModelLoadError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ids = encode(model.vocab, corpus.val)
    check = check_int8(model, ids, streams=args.streams, text=f"{corpus.val_from} of {args.dataset}")
    verdict = "int8 may serve this model" if check["ok"] else "int8 stays off for this model"
    print(f"fp32 steps: {check['fp32_loss']:.4f} nats/char; int8 steps: {check['int8_loss']:.4f} nats/char; "
          f"rise {check['loss_rise']:+.4f} (limit {MAX_LOSS_RISE}) over {check['characters']:,} characters: {verdict}.")
    if args.write:
        folder = args.model or str(default_model_path())
        if not os.path.isdir(folder):
            print(f"error: --write needs a local model folder; {folder} is not one.", file=sys.stderr)
            return 1
        print(f"wrote {write_check(folder, check)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
