"""`python -m lstm_model.train`: train a CharLSTM on a Hugging Face dataset or a local corpus.

The output folder is a Hub-layout model (config.json, model.safetensors, README.md model card)
plus `training_state.safetensors` (weights, optimizer, scheduler, step, RNG states, the carried
LSTM state and the data position, with its JSON metadata in the safetensors header), written
atomically, so `--resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.distributed
from torch import nn

from .data import (
    DEFAULT_DATASET,
    DataError,
    StreamBatches,
    StreamingCorpus,
    batchify,
    default_revision,
    encode,
    get_batch,
    load_corpus,
    num_batches,
)
from .hub import ModelLoadError, load_model, push_folder, write_model_card
from .model import CharLSTM

LN2 = math.log(2)
STATE_NAME = "training_state.safetensors"
# Flags whose value may change on --resume (the rest come from the saved config).
RESUMABLE = {"max_steps", "epochs", "eval_every", "eval_batches", "push_to_hub", "device", "out", "resume", "quiet",
             "sample_chars", "checkpoint_every"}


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
    # model
    embed_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2
    forget_bias: float = 1.0
    turn_separator: str = "\n\n"
    stop_sequence: str = "\n\n"
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
    # bookkeeping
    eval_every: int = 200
    eval_batches: int = 20
    checkpoint_every: int | None = None
    sample_chars: int = 300
    seed: int = 1337
    device: str = "auto"
    out: str = "runs/char-lstm"
    resume: bool = False
    push_to_hub: str | None = None
    quiet: bool = False

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


class TrainingStopped(RuntimeError):
    """Training cannot go on; the message is for a person."""


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's share of the batch's contiguous streams."""
        per_rank = batch_size // self.world
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t) / self.world

    def gather_rows(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Concatenate every rank's tensor along `dim` (the batch rows), on every rank."""
        if self.world == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)


def init_distributed(device_name: str) -> tuple[Dist, str]:
    """Join the torchrun job when WORLD_SIZE > 1 (gloo on CPU, NCCL on GPUs); returns the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    dist = torch.distributed
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        gpus = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if per_node > gpus:  # NCCL cannot put two processes on one GPU; every rank stops at once
            raise TrainingStopped(
                f"torchrun started {per_node} processes on this machine but it has {gpus} CUDA GPU(s), and NCCL "
                f"needs one GPU per process: use --nproc_per_node={gpus}, or --device cpu to train on CPU with gloo.")
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size()), device_name


# -- configuration ------------------------------------------------------------------------------


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
    add("--embed-dim", type=int, help=f"character embedding size (default {d.embed_dim})")
    add("--hidden-size", type=int, help=f"LSTM units per layer (default {d.hidden_size})")
    add("--num-layers", type=int, help=f"LSTM layers (default {d.num_layers})")
    add("--dropout", type=float, help=f"dropout on the embedding, between layers and before the head (default {d.dropout})")
    add("--forget-bias", type=float, help=f"initial forget-gate bias (default {d.forget_bias})")
    add("--turn-separator", help="text appended to each chat message (default: a blank line)")
    add("--stop-sequence", help="text that ends a chat reply (default: a blank line)")
    add("--batch-size", type=int, help=f"contiguous streams per batch (default {d.batch_size})")
    add("--seq-len", type=int, help=f"characters per truncated-BPTT window (default {d.seq_len})")
    add("--lr", type=float, help=f"peak AdamW learning rate (default {d.lr})")
    add("--min-lr-ratio", type=float, help=f"final learning rate as a fraction of --lr (default {d.min_lr_ratio})")
    add("--warmup-steps", type=int, help=f"linear warm-up steps (default {d.warmup_steps})")
    add("--weight-decay", type=float, help=f"AdamW weight decay on weight matrices (default {d.weight_decay})")
    add("--grad-clip", type=float, help=f"gradient norm clip (default {d.grad_clip})")
    add("--max-steps", type=int, help="stop after this many optimiser steps (default: --epochs)")
    add("--epochs", type=float, help=f"passes over the training text (default {d.epochs})")
    add("--eval-every", type=int, help=f"steps between evaluations and checkpoints (default {d.eval_every})")
    add("--eval-batches", type=int, help=f"batches per loss estimate (default {d.eval_batches})")
    add("--checkpoint-every", type=int, help="steps between checkpoints (default: --eval-every)")
    add("--sample-chars", type=int, help=f"length of the sample in the model card (default {d.sample_chars})")
    add("--seed", type=int, help=f"random seed (default {d.seed})")
    add("--device", choices=["auto", "cpu", "cuda", "mps"], help="where to train (default auto)")
    add("--out", help=f"output folder (default {d.out})")
    add("--resume", action="store_true", help="continue the run saved in --out")
    add("--push-to-hub", metavar="REPO_ID", help="upload the result to this Hub model repo when done")
    add("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_config(argv=None) -> TrainConfig:
    """Defaults, then --config FILE, then the flags actually given."""
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    values: dict = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                values = json.load(f)
        except (OSError, ValueError) as err:
            raise TrainingStopped(f"Could not read --config {args.config} ({err}); give a JSON file of settings.") from None
        unknown = set(values) - TrainConfig.field_names()
        if unknown:
            raise TrainingStopped(f"--config {args.config} has unknown settings {sorted(unknown)}; see --help for the names.")
    values.update(given)
    if values.get("resume"):
        saved = read_saved_config(values.get("out", TrainConfig.out))
        if saved is not None:
            changed = {k for k, v in values.items() if k not in RESUMABLE and k in saved and saved[k] != v}
            if changed:
                print(f"note: --resume keeps the saved settings for {sorted(changed)}", file=sys.stderr)
            merged = dict(saved)
            merged.update({k: v for k, v in values.items() if k in RESUMABLE})
            values = merged
    config = TrainConfig(**{k: v for k, v in values.items() if k in TrainConfig.field_names()})
    check_settings(config)
    return config


def check_settings(c: TrainConfig) -> None:
    problems = []
    for name in ("embed_dim", "hidden_size", "num_layers", "batch_size", "seq_len", "eval_every", "eval_batches"):
        if getattr(c, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= c.dropout < 1.0:
        problems.append("--dropout must be in [0, 1)")
    if c.lr <= 0:
        problems.append("--lr must be positive")
    if c.max_steps is not None and c.max_steps < 1:
        problems.append("--max-steps must be at least 1")
    if c.epochs <= 0:
        problems.append("--epochs must be positive")
    if problems:
        raise TrainingStopped("; ".join(problems) + ".")


def read_saved_config(out: str) -> dict | None:
    path = os.path.join(out, STATE_NAME)
    if not os.path.isfile(path):
        return None
    return read_state_metadata(path)["config"]


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


# -- schedule, optimiser ------------------------------------------------------------------------


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to `min_ratio` at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, c: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embedding")]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embedding")]
    groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=c.lr, betas=(0.9, 0.99))


# -- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_streams(model: CharLSTM, streams: torch.Tensor, seq_len: int, max_batches: int | None = None) -> float:
    """Mean loss (nats/char) over contiguous batches, the state carried from batch to batch."""
    was_training = model.training
    model.eval()
    state = model.begin_state(streams.shape[0], streams.device)
    total, count = 0.0, 0
    n = num_batches(streams, seq_len)
    for i in range(n if max_batches is None else min(n, max_batches)):
        x, y = get_batch(streams, i, seq_len)
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / max(1, count)


@torch.no_grad()
def evaluate_text(model: CharLSTM, ids: torch.Tensor, chunk: int = 4096) -> float:
    """Loss (nats/char) of a whole text read once, batch 1, the state carried through all of it.

    Every character is scored, the first one from the fresh state (the head applied to H = 0).
    """
    was_training = model.training
    model.eval()
    ids = ids.to(model.head.weight.device)
    state = model.begin_state(1)
    total = nn.functional.cross_entropy(model.logits_from_state(state), ids[:1], reduction="sum").item()
    for start in range(0, ids.numel() - 1, chunk):
        x = ids[start : start + chunk][None]
        y = ids[start + 1 : start + chunk + 1][None]
        x = x[:, : y.shape[1]]
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
    model.train(was_training)
    return total / ids.numel()


# -- checkpoints --------------------------------------------------------------------------------


def _atomic_path(final: str) -> str:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(final) + ".", suffix=".tmp", dir=os.path.dirname(final) or ".")
    os.close(fd)
    return tmp


def _fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def save_training_state(path: str, model, optimizer, scheduler, meta: dict, carry, rng_states=None) -> None:
    """One safetensors file holding everything --resume needs; written to a temp file, then renamed."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if rng_states is not None:  # one CPU RNG state per rank of a torchrun job
        for rank in range(1, rng_states.shape[0]):
            tensors[f"rng.cpu.rank{rank}"] = rng_states[rank].contiguous()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    if carry is not None:
        tensors["carry.h"] = carry[0].detach().cpu().contiguous()
        tensors["carry.c"] = carry[1].detach().cpu().contiguous()
    meta = dict(meta, param_groups=opt["param_groups"], scheduler=scheduler.state_dict())
    tmp = _atomic_path(path)
    try:
        save_file(tensors, tmp, metadata={"json": json.dumps(meta)})
        _fsync_replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_state_metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["json"])


def load_training_state(path: str, model, optimizer, scheduler, device, rank: int = 0):
    from safetensors.torch import load_file

    tensors = load_file(path)
    meta = read_state_metadata(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if rank == 0:
        torch.set_rng_state(tensors["rng.cpu"])
    elif f"rng.cpu.rank{rank}" in tensors:
        torch.set_rng_state(tensors[f"rng.cpu.rank{rank}"])
    else:  # resumed with more processes than saved: a fresh, distinct stream for the new rank
        torch.manual_seed(meta["config"]["seed"] + 7919 * rank + meta["step"])
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    carry = None
    if "carry.h" in tensors:
        carry = (tensors["carry.h"].to(device), tensors["carry.c"].to(device))
    return meta, carry


def save_model_folder(out: str, model: CharLSTM) -> None:
    """config.json + model.safetensors, each replaced atomically."""
    if model.head.weight.device.type != "cpu":
        # cuDNN flattens the LSTM weights into one buffer; safetensors refuses such shared storage.
        model = copy.deepcopy(model).to("cpu")
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp:
        model.save_pretrained(tmp)
        for name in ("config.json", "model.safetensors"):
            _fsync_replace(os.path.join(tmp, name), os.path.join(out, name))


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a training run returns: where it saved and the losses it logged."""

    out: str
    step: int
    losses: list[float] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    stopped: str = "finished"


def _log(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def plot_losses(out: str) -> None:
    """loss_curve.png from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, train, evals = [], [], []
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                steps.append(r["step"])
                train.append(r["loss"])
            if "val_loss" in r:
                evals.append((r["step"], r["train_loss"], r["val_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(steps, train, color="#bbb", lw=0.8, label="training batch loss")
    if evals:
        s, t, v = zip(*evals)
        ax.plot(s, t, "o-", label="train (eval mode)")
        ax.plot(s, v, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = _atomic_path(os.path.join(out, "loss_curve.png"))
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, os.path.join(out, "loss_curve.png"))


class _Data:
    """Training and validation batches for in-memory or streaming corpora, with a resumable position."""

    def __init__(self, c: TrainConfig, device, ddp: Dist | None = None):
        self.c, self.device, self.ddp = c, device, ddp or Dist()
        vocab = None
        if c.vocab_from:
            try:
                vocab = load_model(c.vocab_from).vocab
            except ModelLoadError as err:
                raise TrainingStopped(f"--vocab-from: {err}") from None
        if c.streaming:
            self.corpus = StreamingCorpus(c.dataset, c.revision, c.text_column, c.val_fraction, c.train_split,
                                          c.val_split, vocab=vocab)
            self.vocab = self.corpus.vocab()
            self.train = StreamBatches(self.corpus, "train", c.batch_size // self.ddp.world, c.seq_len,
                                       rank=self.ddp.rank, world=self.ddp.world)
            val = StreamBatches(self.corpus, "val", min(c.batch_size, 16), c.seq_len)
            xs, ys = [], []
            for _, x, y in val.iterate():
                xs.append(x)
                ys.append(y)
                if len(xs) >= c.eval_batches:
                    break
            self.val_batches = list(zip(xs, ys))
            self.val_ids = None
            self.batches_per_epoch = len(self.train)
            self.val_from = self.corpus.val_from
            self.train_chars = self.corpus.length("train")
        else:
            corpus = load_corpus(c.dataset, c.revision, c.text_column, c.val_fraction, c.train_split, c.val_split)
            self.vocab = vocab or corpus.vocab()
            self.train_ids = encode(self.vocab, corpus.train)
            self.val_ids = encode(self.vocab, corpus.val)
            self.val_streams = batchify(self.val_ids, min(c.batch_size, 16)).to(device)
            self.batches_per_epoch = num_batches(batchify(self.train_ids, c.batch_size), c.seq_len)
            self.val_from = corpus.val_from
            self.train_chars = len(corpus.train)
        if self.batches_per_epoch < 1:
            raise TrainingStopped("The training text is too short for this --batch-size and --seq-len; lower them.")

    def epoch_streams(self, epoch: int, all_rows: bool = False) -> torch.Tensor:
        """The training text as (batch, length) streams (this rank's rows unless `all_rows`); each
        epoch after the first starts at a random offset (seeded), so BPTT windows fall at new places."""
        offset = 0
        if epoch > 0:
            g = torch.Generator().manual_seed(self.c.seed * 1000 + epoch)
            offset = int(torch.randint(0, self.c.seq_len, (1,), generator=g))
        streams = batchify(self.train_ids[offset:], self.c.batch_size)
        return (streams if all_rows else streams[self.ddp.rows(self.c.batch_size)]).to(self.device)

    def epoch_batches(self, epoch: int, start: int):
        """Yield (index, x, y) for one epoch from batch `start`."""
        if self.c.streaming:
            for index, x, y in self.train.iterate(start):
                yield index, x.to(self.device), y.to(self.device)
            return
        streams = self.epoch_streams(epoch)
        for index in range(start, num_batches(streams, self.c.seq_len)):
            x, y = get_batch(streams, index, self.c.seq_len)
            yield index, x, y

    def estimate_loss(self, model: CharLSTM) -> dict:
        """Train and validation loss in eval mode over `eval_batches` contiguous batches each."""
        c = self.c
        if c.streaming:
            val = _loss_over(model, self.val_batches)
            train_batches = []
            for _, x, y in self.train.iterate(0):
                train_batches.append((x.to(self.device), y.to(self.device)))
                if len(train_batches) >= c.eval_batches:
                    break
            train = _loss_over(model, train_batches)
        else:
            val = evaluate_streams(model, self.val_streams, c.seq_len, c.eval_batches)
            train = evaluate_streams(model, self.epoch_streams(0, all_rows=True), c.seq_len, c.eval_batches)
        return {"train_loss": train, "val_loss": val, "train_bpc": train / LN2, "val_bpc": val / LN2}


@torch.no_grad()
def _loss_over(model, batches) -> float:
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for x, y in batches:
        if state is not None and state[0].shape[1] != x.shape[0]:
            state = None
        x, y = x.to(model.head.weight.device), y.to(model.head.weight.device)
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / max(1, count)


def train(c: TrainConfig, command: str = "") -> Run:
    """Run (or resume) training as configured; returns when done, interrupted, or stopped.

    Under `torchrun --nproc_per_node=N`, each rank trains on its share of the --batch-size
    streams (the global batch) with DistributedDataParallel; rank 0 alone writes logs,
    checkpoints and the model card, and pushes.
    """
    ddp, device_name = init_distributed(c.device)
    try:
        run = _train(c, command, ddp, pick_device(device_name))
        if ddp.world > 1:  # wait for rank 0's model card and push before the group goes away
            torch.distributed.barrier()
        return run
    finally:
        if ddp.world > 1:
            torch.distributed.destroy_process_group()


def _train(c: TrainConfig, command: str, ddp: Dist, device: torch.device) -> Run:
    if c.batch_size % ddp.world:
        raise TrainingStopped(f"--batch-size {c.batch_size} must be divisible by the {ddp.world} processes.")
    try:
        os.makedirs(c.out, exist_ok=True)
        if ddp.main:
            probe = _atomic_path(os.path.join(c.out, "probe"))
            os.remove(probe)
    except OSError as err:
        raise TrainingStopped(f"Cannot write to the output folder {c.out} ({err.strerror or err}); choose a writable --out.") from None
    state_path = os.path.join(c.out, STATE_NAME)
    if ddp.main:
        _remove_stale_temporaries(c.out)
    if c.resume and not os.path.isfile(state_path):
        raise TrainingStopped(f"--resume found no {STATE_NAME} in {c.out}; start without --resume or point --out at the run.")
    if not c.resume and os.path.isfile(state_path):
        raise TrainingStopped(f"{c.out} already holds a training run; add --resume to continue it or choose another --out.")

    torch.manual_seed(c.seed)
    try:
        data = _Data(c, device, ddp)
    except DataError as err:
        raise TrainingStopped(str(err)) from None
    model = CharLSTM(
        vocab=data.vocab.chars, embed_dim=c.embed_dim, hidden_size=c.hidden_size, num_layers=c.num_layers,
        dropout=c.dropout, turn_separator=c.turn_separator, stop_sequence=c.stop_sequence, forget_bias=c.forget_bias,
    ).to(device)
    if ddp.world > 1 and not c.resume:  # same initial weights everywhere, distinct dropout masks per rank
        torch.manual_seed(c.seed * 7919 + ddp.rank)
    total_steps = c.max_steps or max(1, int(c.epochs * data.batches_per_epoch))
    optimizer = make_optimizer(model, c)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, c.warmup_steps, total_steps, c.min_lr_ratio))

    step, epoch, batch_index, carry, best = 0, 0, 0, None, {}
    metrics_path = os.path.join(c.out, "metrics.jsonl")
    if c.resume:
        meta, carry = load_training_state(state_path, model, optimizer, scheduler, device, ddp.rank)
        step, epoch, batch_index, best = meta["step"], meta["epoch"], meta["batch_index"], meta.get("metrics", {})
        if carry is not None:
            carry = (carry[0][:, ddp.rows(c.batch_size)], carry[1][:, ddp.rows(c.batch_size)])
        if ddp.main:
            _truncate_log(metrics_path, step)
            print(f"Resuming {c.out} at step {step} (epoch {epoch}, batch {batch_index}).", file=sys.stderr)
    elif ddp.main:
        open(metrics_path, "w").close()
        with open(os.path.join(c.out, "train_config.json"), "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(c), f, indent=2)
    if ddp.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if c.resume:  # the checkpoint was read by every rank: make sure all hold rank 0's copy
            for p in model.parameters():
                torch.distributed.broadcast(p.data, 0)
    else:
        net = model

    every = c.checkpoint_every or c.eval_every
    run = Run(out=c.out, step=step, metrics=best)

    def checkpoint() -> None:
        # Collective first (every rank takes part), then rank 0 writes.
        full_carry = None
        if carry is not None:
            full_carry = (ddp.gather_rows(carry[0].contiguous()), ddp.gather_rows(carry[1].contiguous()))
        rng_states = ddp.gather_rows(torch.get_rng_state()[None], dim=0)
        if not ddp.main:
            return
        meta = {"step": step, "epoch": epoch, "batch_index": batch_index, "config": dataclasses.asdict(c),
                "metrics": run.metrics, "total_steps": total_steps, "world_size": ddp.world}
        try:
            save_training_state(state_path, model, optimizer, scheduler, meta, full_carry, rng_states)
            save_model_folder(c.out, model)
        except OSError as err:
            raise TrainingStopped(f"Could not save the checkpoint in {c.out} ({err.strerror or err}); free disk space "
                                  "or choose another --out, then --resume.") from None

    if ddp.main:
        print(f"Training a {model.num_parameters():,}-parameter CharLSTM on {c.dataset} ({data.train_chars:,} training "
              f"characters, {len(data.vocab)} in the vocabulary, validation: {data.val_from}) on {device}"
              + (f" x {ddp.world} processes" if ddp.world > 1 else "") + f" for {total_steps} steps.", file=sys.stderr)

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=c.quiet or not ddp.main or None, dynamic_ncols=True, unit="step")
    try:  # a SIGTERM (e.g. from a job scheduler) saves like Ctrl-C; only possible in the main thread
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:
        previous_handler = None
    model.train()
    chars_seen, t0 = 0, time.perf_counter()
    try:
        while step < total_steps:
            for index, x, y in data.epoch_batches(epoch, batch_index):
                if carry is None or carry[0].shape[1] != x.shape[0]:
                    carry = model.begin_state(x.shape[0])
                logits, new_state = net(x, carry)
                loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                value = ddp.mean(loss.item())
                if not math.isfinite(value):
                    raise TrainingStopped(
                        f"The loss became {value} at step {step + 1}; training stopped and the last good checkpoint "
                        f"in {c.out} is kept. Lower --lr or --grad-clip and --resume.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
                optimizer.step()
                scheduler.step()
                carry = (new_state[0].detach(), new_state[1].detach())
                step += 1
                batch_index = index + 1
                run.losses.append(value)
                chars_seen += y.numel() * ddp.world
                rate = chars_seen / max(1e-9, time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", chars_s=f"{rate:,.0f}", refresh=False)
                if ddp.main:
                    _log(metrics_path, {"step": step, "loss": value, "lr": scheduler.get_last_lr()[0]})
                if (step % c.eval_every == 0 or step == total_steps) and ddp.main:  # rank 0 evaluates
                    est = data.estimate_loss(model)
                    run.metrics = dict(est, step=step)
                    _log(metrics_path, dict(est, step=step, epoch=epoch, chars_per_s=rate, time=time.time()))
                    bar.write(f"step {step}: train {est['train_loss']:.4f} nats ({est['train_bpc']:.3f} bpc), "
                              f"val {est['val_loss']:.4f} nats ({est['val_bpc']:.3f} bpc), {rate:,.0f} chars/s")
                    plot_losses(c.out)
                if step % every == 0 or step == total_steps:
                    checkpoint()
                if step >= total_steps:
                    break
            else:
                epoch += 1
                batch_index = 0
                carry = None
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        run.step, run.stopped = step, "interrupted"
        if ddp.main:
            print(f"\nInterrupted: saved step {step} in {c.out}; continue with --resume.", file=sys.stderr)
        return run
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    run.step = step
    if ddp.main:
        finish(c, model, data, run, command)
    return run


def _remove_stale_temporaries(out: str) -> None:
    """Temporary files of a save that was killed midway (the real files are intact)."""
    import shutil

    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name.startswith(".") and name.endswith(".tmp") and os.path.isfile(path):
            os.remove(path)
        elif name.startswith(".save-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _truncate_log(path: str, step: int) -> None:
    """Drop log lines past the checkpoint's step, so a resumed log reads like one run."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(keep)


def write_json(path: str, data: dict) -> None:
    """A JSON file written to a temporary file and renamed (never half-written)."""
    tmp = _atomic_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def finish(c: TrainConfig, model: CharLSTM, data: _Data, run: Run, command: str) -> None:
    """Final whole-split validation, the model card, and the optional push."""
    from .generate import generate
    from .quantize import check_int8, int8_available, write_check

    model.eval()
    if data.val_ids is not None:
        full = evaluate_text(model, data.val_ids.to(model.head.weight.device))
        run.metrics.update(val_loss_full=full, val_bpc_full=full / LN2)
        print(f"Validation over the whole held-out text ({data.val_ids.numel():,} characters, state carried): "
              f"{full:.4f} nats/char ({full / LN2:.3f} bits/char).", file=sys.stderr)
    cpu_model = model.to("cpu")
    if data.val_ids is not None and int8_available(cpu_model):  # may int8 steps serve it? (lstm_model.quantize)
        check = check_int8(cpu_model, data.val_ids.cpu(), text=f"validation ({data.val_from})")
        write_check(c.out, check)
        run.metrics.update(fp32_step_loss=check["fp32_loss"], int8_step_loss=check["int8_loss"])
        print(f"Int8 serving check: fp32 steps {check['fp32_loss']:.4f}, int8 steps {check['int8_loss']:.4f} nats/char "
              f"(rise {check['loss_rise']:+.4f}; int8 {'allowed' if check['ok'] else 'stays off'}).", file=sys.stderr)
    if data.val_ids is not None:
        write_json(os.path.join(c.out, "final_metrics.json"), run.metrics)
    sample, _ = generate(cpu_model, prompt="\n", max_new_chars=c.sample_chars, temperature=0.8, seed=c.seed)
    write_model_card(
        c.out, model=cpu_model, dataset=c.dataset,
        split=data.val_from if data.val_from.startswith("split") else f"the {data.val_from} of the text",
        train_config=dict(dataclasses.asdict(c), revision=default_revision(c.dataset, c.revision)),
        metrics=run.metrics, sample=sample, command=command,
    )
    if c.push_to_hub:
        try:
            url = push_folder(c.out, c.push_to_hub)
        except ModelLoadError as err:
            raise TrainingStopped(str(err)) from None
        print(f"Pushed to {url}", file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = resolve_config(argv)
        run = train(config, command="python -m lstm_model.train " + shlex.join(argv))
    except (TrainingStopped, DataError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 130 if run.stopped == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
