"""Training settings: the `TrainConfig` dataclass (saved with the checkpoint), the command line
that fills it (defaults, then `--config FILE`, then the flags given), and their checks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass

import torch

from .cards import LANGUAGE_CODE
from .checkpoint import STATE_NAME, damaged, read_state_metadata
from .data import DEFAULT_DATASET
from .model import LIMITS
from .sampling import MAX_NEW_CHARS_LIMIT
from .vocab import NORMALIZATIONS, unescape

# Flags whose value may change on --resume (the rest come from the saved config).
RESUMABLE = {"max_steps", "epochs", "time_limit", "eval_every", "eval_batches", "push_to_hub", "device", "out", "resume", "quiet",
             "sample_chars", "checkpoint_every", "overwrite", "language"}


@dataclass
class TrainConfig:
    # data
    dataset: str = DEFAULT_DATASET
    revision: str | None = None
    text_column: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    val_fraction: float = 0.1
    streaming: bool = False
    vocab_from: str | None = None
    init_from: str | None = None  # start from this model's weights (a curriculum's next stage, fine-tuning)
    widen: int | None = None  # with init_from: grow each LSTM layer to this many units (train.widened)
    # model
    embed_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2
    # AWD-LSTM regularisation (lstm_model/regularize.py), off by default; the saved model is plain
    weight_drop: float = 0.0
    locked_dropout: float = 0.0
    embed_dropout: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights, the model saved (0: off)
    loss_on: str = "all"  # "replies": a chat dataset's loss on the assistant's characters only
    conversation_state: str = "fresh"  # a chat dataset: each conversation from a fresh state ("carried": one long text)
    forget_bias: float = 1.0
    turn_separator: str = "\n\n"
    stop_sequence: str = "\n\n"
    normalize: str = ""  # how a chat model reads user messages (vocab.normalize), in training and in the chat
    # optimisation
    batch_size: int = 64
    seq_len: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int | None = None
    epochs: float = 1.0
    time_limit: float | None = None  # seconds of training; the schedule is fitted to the steps that fit
    # bookkeeping
    eval_every: int = 200
    eval_batches: int = 20
    checkpoint_every: int | None = None
    sample_chars: int = 300
    seed: int = 1337
    device: str = "auto"
    out: str = "runs/char-lstm"
    resume: bool = False
    overwrite: bool = False
    push_to_hub: str | None = None
    language: str = "en"  # the corpus's language (ISO 639-1), for the model card's metadata
    quiet: bool = False

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


class TrainingStopped(RuntimeError):
    """Training cannot go on; the message is for a person."""


class BadSettings(TrainingStopped):
    """A setting out of range or of the wrong kind, found before anything is read (status 2)."""


# The settings with a few possible values: the flags' choices, also checked in a --config file.
CHOICES = {"loss_on": ("all", "replies"), "conversation_state": ("fresh", "carried"),
           "device": ("auto", "cpu", "cuda", "mps"), "normalize": tuple(NORMALIZATIONS)}
MAX_CONFIG_CHARS = 1_000_000  # a --config file is read whole; one of settings is a few hundred characters
MAX_SEED = 2**32 - 1  # torch.manual_seed takes 64 bits, and ranks derive theirs as seed * 7919 + rank
KINDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lstm_model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    d = TrainConfig()
    add = p.add_argument
    add("--config", help="JSON file of settings (keys as the flags, with _ for -); flags given here override it")
    add("--dataset", help=f"Hub dataset id, local .txt/.parquet/.jsonl/.csv file, folder of them, or save_to_disk folder (default {d.dataset})")
    add("--revision", help="Hub dataset revision (default for karpathy/tiny_shakespeare: refs/convert/parquet)")
    add("--text-column", help="column holding the text (default: 'text', or the only column)")
    add("--train-split", help="split to train on (default: train)")
    add("--val-split", help="validation split (default: the dataset's validation split, else --val-fraction)")
    add("--val-fraction", type=float, help=f"hold out the last fraction of the text when there is no validation split (default {d.val_fraction})")
    add("--streaming", action="store_true", help="stream the corpus (IterableDataset) instead of loading it into memory")
    add("--vocab-from", help="take the vocabulary from this model (folder or repo id) instead of a first pass")
    add("--init-from", help="start from this model's weights (folder or repo id), its vocabulary and its shape "
        "(--embed-dim, --hidden-size, --num-layers): the next stage of a curriculum, or fine-tuning")
    add("--widen", type=int, metavar="H", help="with --init-from: grow each LSTM layer to H units; the new units "
        "start silent (no weight out of them), so the wider model computes what the narrower one did and "
        "training adds capacity without starting over")
    add("--embed-dim", type=int, help=f"character embedding size (default {d.embed_dim})")
    add("--hidden-size", type=int, help=f"LSTM units per layer (default {d.hidden_size})")
    add("--num-layers", type=int, help=f"LSTM layers (default {d.num_layers})")
    add("--dropout", type=float, help=f"dropout on the embedding, between layers and before the head (default {d.dropout})")
    add("--weight-drop", type=float, help="DropConnect on the hidden-to-hidden weights, one mask per batch "
                                          "(AWD-LSTM; default 0: off)")
    add("--locked-dropout", type=float, help="variational dropout on the LSTM's input and output, one mask per "
                                             "sequence; replaces --dropout there (default 0: off)")
    add("--embed-dropout", type=float, help="drop whole characters' embeddings for a batch (default 0: off)")
    add("--ema", type=float, metavar="DECAY",
        help="keep an exponential moving average of the weights (e.g. 0.999 per step; the first steps average "
             "faster) and evaluate, checkpoint and save that average: the model served (default 0: off)")
    add("--loss-on", choices=CHOICES["loss_on"], help="for a chat dataset (a messages column): the loss on every "
                                                      "character or on the replies only (default all)")
    add("--conversation-state", choices=CHOICES["conversation_state"],
        help="for a chat dataset: each conversation read from a fresh state, as a new chat session starts "
             "(default fresh), or the state carried from one conversation into the next (carried)")
    add("--forget-bias", type=float, help=f"initial forget-gate bias (default {d.forget_bias})")
    add("--turn-separator", type=unescape, help="text appended to each chat message; \\n is a newline "
                                                "(default: a blank line, \\n\\n)")
    add("--stop-sequence", type=unescape, help="text that ends a chat reply; \\n is a newline (default: a blank line)")
    add("--normalize", choices=list(NORMALIZATIONS), help="for a chat dataset: how user messages are read, in "
        "training and by the chat (saved in config.json): '' as typed (default); lower: lower case, single "
        "spaces, no final . ? !, so that every way of typing a sentence is one input")
    add("--batch-size", type=int, help=f"contiguous streams per batch (default {d.batch_size})")
    add("--seq-len", type=int, help=f"characters per truncated-BPTT window (default {d.seq_len})")
    add("--lr", type=float, help=f"peak AdamW learning rate (default {d.lr})")
    add("--min-lr-ratio", type=float, help=f"final learning rate as a fraction of --lr (default {d.min_lr_ratio})")
    add("--warmup-steps", type=int, help=f"linear warm-up steps (default {d.warmup_steps})")
    add("--weight-decay", type=float, help=f"AdamW weight decay on weight matrices (default {d.weight_decay})")
    add("--grad-clip", type=float, help=f"gradient norm clip (default {d.grad_clip})")
    add("--max-steps", type=int, help="stop after this many optimiser steps (default: --epochs)")
    add("--epochs", type=float, help=f"passes over the training text (default {d.epochs})")
    add("--time-limit", type=float, metavar="SECONDS",
        help="train for about this long: the cosine schedule is fitted to the steps that fit, re-estimated "
             "from the speed so far (--max-steps and --epochs still cap it; default: no limit)")
    add("--eval-every", type=int, help=f"steps between evaluations and checkpoints (default {d.eval_every})")
    add("--eval-batches", type=int, help=f"batches per loss estimate (default {d.eval_batches})")
    add("--checkpoint-every", type=int, help="steps between checkpoints (default: --eval-every)")
    add("--sample-chars", type=int, help=f"length of the sample in the model card (default {d.sample_chars})")
    add("--seed", type=int, help=f"random seed (default {d.seed})")
    add("--device", choices=CHOICES["device"], help="where to train (default auto)")
    add("--out", help=f"output folder (default {d.out})")
    add("--resume", action="store_true", help="continue the run saved in --out")
    add("--overwrite", action="store_true", help="replace the model already in --out (otherwise refused)")
    add("--push-to-hub", metavar="REPO_ID", help="upload the result to this Hub model repo when done")
    add("--language", help=f"the corpus's language code for the model card (default {d.language})")
    add("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_config(argv=None) -> TrainConfig:
    """Defaults, then --config FILE, then the flags actually given."""
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    values: dict = {}
    if args.config:
        values = read_config_file(args.config)
    values.update(given)
    if values.get("resume"):
        saved = read_saved_config(values.get("out", TrainConfig.out))
        if saved is not None:
            changed = {k for k, v in values.items() if k not in RESUMABLE and k in saved and saved[k] != v}
            if changed:
                print(f"note: --resume keeps the saved settings for {sorted(changed)}", file=sys.stderr)
            merged = dict(saved)
            merged.setdefault("conversation_state", "carried")  # runs saved before the setting carried it
            merged.update({k: v for k, v in values.items() if k in RESUMABLE})
            values = merged
    config = TrainConfig(**{k: v for k, v in values.items() if k in TrainConfig.field_names()})
    check_settings(config)
    return config


def read_config_file(path: str) -> dict:
    """The settings of a --config file: a JSON object of known names, each of its field's kind;
    BadSettings with one sentence otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CONFIG_CHARS + 1)  # bounded: --config /dev/zero must not fill the memory
        values = json.loads(text) if len(text) <= MAX_CONFIG_CHARS else None
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0] or type(err).__name__
        raise BadSettings(f"Could not read --config {path} ({reason}); give a JSON file of settings.") from None
    if not isinstance(values, dict):
        raise BadSettings(f"--config {path} must hold one JSON object of settings under {MAX_CONFIG_CHARS:,} "
                          'characters, such as {"hidden_size": 256, "lr": 0.002}.')
    unknown = set(values) - TrainConfig.field_names()
    if unknown:
        raise BadSettings(f"--config {path} has unknown settings {sorted(unknown)}; see --help for the names.")
    wrong = wrong_kinds(values)
    if wrong:
        raise BadSettings(f"--config {path}: {'; '.join(wrong)}.")
    return values


def wrong_kinds(values: dict) -> list[str]:
    """What in `values` (settings read from JSON) is not of its field's kind, one phrase each: the
    checks of check_settings compare numbers, which a string from a file is not."""
    wrong = []
    for f in dataclasses.fields(TrainConfig):
        if f.name not in values:
            continue
        value, (kind, _, optional) = values[f.name], f.type.partition(" | ")  # "int | None": ("int", " | ", "None")
        if value is None and optional:
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not {"int": numeric and isinstance(value, int), "float": numeric, "str": isinstance(value, str),
                "bool": isinstance(value, bool)}.get(kind, True):
            wrong.append(f"{f.name} must be {KINDS[kind]}{' or null' if optional else ''}, not {json.dumps(value)[:40]}")
    return wrong


def check_settings(c: TrainConfig) -> None:
    """Every setting in range, before any data is read or memory allocated; one sentence."""
    problems = []
    for name in ("batch_size", "seq_len", "eval_every", "eval_batches"):
        if getattr(c, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("embed_dim", "hidden_size", "num_layers"):
        if not 1 <= getattr(c, name) <= LIMITS[name]:
            problems.append(f"--{name.replace('_', '-')} must be from 1 to {LIMITS[name]}")
    if c.widen is not None:
        if not c.init_from:
            problems.append("--widen grows the model --init-from names: give --init-from too")
        elif not 1 <= c.widen <= LIMITS["hidden_size"]:
            problems.append(f"--widen must be from 1 to {LIMITS['hidden_size']}")
    for name in ("lr", "epochs", "dropout", "forget_bias", "min_lr_ratio", "weight_decay", "grad_clip", "val_fraction",
                 "weight_drop", "locked_dropout", "embed_dropout", "ema"):
        if not math.isfinite(getattr(c, name)):
            problems.append(f"--{name.replace('_', '-')} must be a finite number")
    for name in ("dropout", "weight_drop", "locked_dropout", "embed_dropout", "ema"):
        if not 0.0 <= getattr(c, name) < 1.0:
            problems.append(f"--{name.replace('_', '-')} must be in [0, 1)")
    if math.isfinite(c.lr) and not c.lr > 0:
        problems.append("--lr must be positive")
    if math.isfinite(c.epochs) and not c.epochs > 0:
        problems.append("--epochs must be positive")
    if not 0.0 <= c.min_lr_ratio <= 1.0:
        problems.append("--min-lr-ratio must be in [0, 1]")
    if not c.grad_clip > 0 or not c.weight_decay >= 0:
        problems.append("--grad-clip must be positive and --weight-decay at least 0")
    if not 0.0 < c.val_fraction < 1.0:
        problems.append("--val-fraction must be between 0 and 1")
    if c.warmup_steps < 0:
        problems.append("--warmup-steps must be at least 0")
    if not 0 <= c.sample_chars <= MAX_NEW_CHARS_LIMIT:
        problems.append(f"--sample-chars must be from 0 to {MAX_NEW_CHARS_LIMIT}")
    for name, allowed in CHOICES.items():  # the flags' choices, here for a --config file's values
        if getattr(c, name) not in allowed:
            problems.append(f"--{name.replace('_', '-')} must be one of {', '.join(map(repr, allowed))}; "
                            f"got {getattr(c, name)!r}")
    if not 0 <= c.seed <= MAX_SEED:
        problems.append(f"--seed must be from 0 to {MAX_SEED:,}")
    if c.time_limit is not None and not (math.isfinite(c.time_limit) and c.time_limit > 0):
        problems.append("--time-limit must be a positive number of seconds")
    if c.max_steps is not None and c.max_steps < 1:
        problems.append("--max-steps must be at least 1")
    if c.checkpoint_every is not None and c.checkpoint_every < 1:
        problems.append("--checkpoint-every must be at least 1")
    if not LANGUAGE_CODE.fullmatch(str(c.language)):
        problems.append(f"--language must be a language code such as en, fr or pt-BR; got {c.language!r}")
    if c.push_to_hub is not None:  # checked now, not after the whole run has trained
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(c.push_to_hub)
        except HFValidationError:
            problems.append(f"--push-to-hub must be a Hub repo id, user/name (letters, digits, '-', '_', '.'); "
                            f"got {c.push_to_hub!r}")
    if problems:
        raise BadSettings("; ".join(problems) + ".")


def read_saved_config(out: str) -> dict | None:
    path = os.path.join(out, STATE_NAME)
    if not os.path.isfile(path):
        return None
    config = read_state_metadata(path)["config"]
    wrong = wrong_kinds(config)
    if wrong:
        raise damaged(path, "its saved settings are not a run's: " + "; ".join(wrong))
    return config


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingStopped("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingStopped("--device mps was asked for but Apple's MPS is not available; use --device cpu or auto.")
    return torch.device(name)

