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
from .model import CELLS, LIMITS
from .sampling import MAX_NEW_CHARS_LIMIT
from .vocab import NORMALIZATIONS, unescape

# Flags whose value may change on --resume (the rest come from the saved config).
RESUMABLE = {"max_steps", "epochs", "time_limit", "eval_every", "eval_batches", "push_to_hub", "device", "out", "resume", "quiet",
             "sample_chars", "checkpoint_every", "overwrite", "language"}


def setting(default, help: str, **flag):
    """A TrainConfig field and its flag, written once: `help` (where "{default}" shows the
    default) and the flag's argparse options (type, choices, metavar, action) beside the default."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


# The settings with a few possible values: the flags' choices, also checked in a --config file.
CHOICES = {"cell": CELLS, "loss_on": ("all", "replies"), "conversation_state": ("fresh", "carried"),
           "device": ("auto", "cpu", "cuda", "mps"), "normalize": tuple(NORMALIZATIONS)}
MAX_CONFIG_CHARS = 1_000_000  # a --config file is read whole; one of settings is a few hundred characters
MAX_SEED = 2**32 - 1  # torch.manual_seed takes 64 bits, and ranks derive theirs as seed * 7919 + rank
KINDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}


@dataclass
class TrainConfig:
    """Every training setting: its default, its flag's help, and (in `__post_init__`) its check."""

    # data
    dataset: str = setting(DEFAULT_DATASET, "Hub dataset id, local .txt/.parquet/.jsonl/.csv file, folder of them, "
                                            "or save_to_disk folder (default {default})")
    revision: str | None = setting(None, "Hub dataset revision (default for karpathy/tiny_shakespeare: "
                                         "refs/convert/parquet)")
    text_column: str | None = setting(None, "column holding the text (default: 'text', or the only column)")
    train_split: str | None = setting(None, "split to train on (default: train)")
    val_split: str | None = setting(None, "validation split (default: the dataset's validation split, else "
                                          "--val-fraction)")
    val_fraction: float = setting(0.1, "hold out the last fraction of the text when there is no validation split "
                                       "(default {default})")
    streaming: bool = setting(False, "stream the corpus (IterableDataset) instead of loading it into memory")
    vocab_from: str | None = setting(None, "take the vocabulary from this model (folder or repo id) instead of a "
                                           "first pass")
    init_from: str | None = setting(None, "start from this model's weights (folder or repo id), its vocabulary and "
                                          "its shape (--cell, --embed-dim, --hidden-size, --num-layers): the next "
                                          "stage of a curriculum, or fine-tuning")
    widen: int | None = setting(None, "with --init-from: grow each recurrent layer to H units; the new units start "
                                      "silent (no weight out of them), so the wider model computes what the narrower "
                                      "one did and training adds capacity without starting over", metavar="H")
    # model
    cell: str = setting("lstm", "the recurrent cell: lstm (H and a cell state C), gru (H alone, gated) or rnn "
                                "(H alone, plain tanh; default {default})", choices=CHOICES["cell"])
    embed_dim: int = setting(64, "character embedding size (default {default})")
    hidden_size: int = setting(512, "units per recurrent layer (default {default})")
    num_layers: int = setting(2, "recurrent layers (default {default})")
    dropout: float = setting(0.2, "dropout on the embedding, between layers and before the head (default {default})")
    # AWD-LSTM regularisation (lstm_model/regularize.py), off by default; the saved model is plain
    weight_drop: float = setting(0.0, "DropConnect on the hidden-to-hidden weights, one mask per batch (AWD-LSTM; "
                                      "default 0: off)")
    locked_dropout: float = setting(0.0, "variational dropout on the LSTM's input and output, one mask per "
                                         "sequence; replaces --dropout there (default 0: off)")
    embed_dropout: float = setting(0.0, "drop whole characters' embeddings for a batch (default 0: off)")
    ema: float = setting(0.0, "keep an exponential moving average of the weights (e.g. 0.999 per step; the first "
                              "steps average faster) and evaluate, checkpoint and save that average: the model "
                              "served (default 0: off)", metavar="DECAY")
    loss_on: str = setting("all", "for a chat dataset (a messages column): the loss on every character or on the "
                                  "replies only (default all)", choices=CHOICES["loss_on"])
    conversation_state: str = setting("fresh", "for a chat dataset: each conversation read from a fresh state, as a "
                                               "new chat session starts (default fresh), or the state carried from "
                                               "one conversation into the next (carried)",
                                      choices=CHOICES["conversation_state"])
    forget_bias: float = setting(1.0, "initial forget-gate bias of an LSTM (default {default}; other cells have "
                                      "no forget gate)")
    turn_separator: str = setting("\n\n", "text appended to each chat message; \\n is a newline (default: a blank "
                                          "line, \\n\\n)", type=unescape)
    stop_sequence: str = setting("\n\n", "text that ends a chat reply; \\n is a newline (default: a blank line)",
                                 type=unescape)
    normalize: str = setting("", "for a chat dataset: how user messages are read, in training and by the chat "
                                 "(saved in config.json): '' as typed (default); lower: lower case, single spaces, "
                                 "no final . ? !, so that every way of typing a sentence is one input",
                             choices=CHOICES["normalize"])
    # optimisation
    batch_size: int = setting(64, "contiguous streams per batch (default {default})")
    seq_len: int = setting(128, "characters per truncated-BPTT window (default {default})")
    lr: float = setting(2e-3, "peak AdamW learning rate (default {default})")
    min_lr_ratio: float = setting(0.1, "final learning rate as a fraction of --lr (default {default})")
    warmup_steps: int = setting(100, "linear warm-up steps (default {default})")
    weight_decay: float = setting(0.01, "AdamW weight decay on weight matrices (default {default})")
    grad_clip: float = setting(1.0, "gradient norm clip (default {default})")
    max_steps: int | None = setting(None, "stop after this many optimiser steps (default: --epochs)")
    epochs: float = setting(1.0, "passes over the training text (default {default})")
    time_limit: float | None = setting(None, "train for about this long: the cosine schedule is fitted to the steps "
                                             "that fit, re-estimated from the speed so far (--max-steps and --epochs "
                                             "still cap it; default: no limit)", metavar="SECONDS")
    # bookkeeping
    eval_every: int = setting(200, "steps between evaluations and checkpoints (default {default})")
    eval_batches: int = setting(20, "batches per loss estimate (default {default})")
    checkpoint_every: int | None = setting(None, "steps between checkpoints (default: --eval-every)")
    sample_chars: int = setting(300, "length of the sample in the model card (default {default})")
    seed: int = setting(1337, "random seed (default {default})")
    device: str = setting("auto", "where to train (default auto)", choices=CHOICES["device"])
    out: str = setting("runs/char-lstm", "output folder (default {default})")
    resume: bool = setting(False, "continue the run saved in --out")
    overwrite: bool = setting(False, "replace the model already in --out (otherwise refused)")
    push_to_hub: str | None = setting(None, "upload the result to this Hub model repo when done", metavar="REPO_ID")
    language: str = setting("en", "the corpus's language code for the model card (default {default})")
    quiet: bool = setting(False, "no progress bar")

    def __post_init__(self):
        check_settings(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


class TrainingStopped(RuntimeError):
    """Training cannot go on; the message is for a person."""


class BadSettings(TrainingStopped):
    """A setting out of range or of the wrong kind, found before anything is read (status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per TrainConfig field (its help, type and choices the field's),
    plus --config. Every default is None here: a flag not given leaves the file's or the default."""
    p = argparse.ArgumentParser(prog="python -m lstm_model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=None)
    p.add_argument("--config", help="JSON file of settings (keys as the flags, with _ for -); flags given here "
                                    "override it")
    for f in dataclasses.fields(TrainConfig):
        options = {k: v for k, v in f.metadata.items() if k != "help"}
        kind = f.type.partition(" | ")[0]
        if kind == "bool":  # default None too: a --config file's true is not undone by a flag not given
            options.update(action="store_true", default=None)
        elif kind in ("int", "float"):
            options.setdefault("type", int if kind == "int" else float)
        if "choices" in options:
            options["choices"] = list(options["choices"])
        p.add_argument("--" + f.name.replace("_", "-"), help=f.metadata["help"].replace("{default}", str(f.default)),
                       **options)
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
    return TrainConfig(**{k: v for k, v in values.items() if k in TrainConfig.field_names()})  # checked there


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
    """Every setting in range, before any data is read or memory allocated; one sentence
    (TrainConfig.__post_init__: no config is made that fails it)."""
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

