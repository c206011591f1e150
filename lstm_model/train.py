"""`python -m lstm_model.train`: train a CharLSTM on a Hugging Face dataset or a local corpus.

Like nanoGPT's train.py and PyTorch's word_language_model: contiguous streams read in windows for
truncated backpropagation through time, the LSTM state carried from batch to batch and detached
between them; AdamW with warm-up and cosine decay; `estimate_loss()` of train and validation loss
every `--eval-every` steps; a checkpoint every `--checkpoint-every` steps (lstm_model.checkpoint),
so `--resume` continues exactly where the run stopped; Ctrl-C (or SIGTERM) saves and exits; a
NaN loss stops with a clear message. Settings: lstm_model.train_config; data:
lstm_model.train_data; several processes: lstm_model.distributed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed
from torch import nn

from .checkpoint import (
    STATE_NAME,
    StateError,
    atomic_path,
    load_training_state,
    read_state_metadata,
    remove_stale_temporaries,
    save_model_folder,
    save_training_state,
    write_json,
)
from .data import DataError, default_revision
from .distributed import Dist, init_distributed
from .evaluate import check_int8, conversation_loss, whole_text_loss
from .text_stream import generate
from .hub import INT8_CHECK_FILE, ModelLoadError, load_model, push_folder, write_model_card
from .model import CONFIG_NAME, GATE_BLOCKS, MAX_PARAMETERS, WEIGHTS_NAME, CharLSTM, parameter_count
from .regularize import Regularized
from .step import pick_engine
from .train_config import BadSettings, TrainConfig, TrainingStopped, pick_device, resolve_config
from .train_data import LN2, TrainingData

__all__ = ["STATE_NAME", "Run", "TrainConfig", "TrainingStopped", "main", "read_state_metadata", "resolve_config", "train"]


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
    tmp = atomic_path(os.path.join(out, "loss_curve.png"))
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, os.path.join(out, "loss_curve.png"))


def widened(model: CharLSTM, start: CharLSTM) -> dict:
    """`start`'s state dict grown to `model`'s wider layers (same cell, embedding size and layer
    count, `model.hidden_size` >= `start.hidden_size`), computing exactly what `start` computes:
    each old unit keeps its weights, gate by gate (PyTorch packs an LSTM's as input, forget, cell,
    output, a GRU's as reset, update, new, H rows each; an RNN has one block); each new unit
    keeps `model`'s fresh incoming weights and biases, and every weight *out* of a new unit (into
    the gates of the same layer, of the layer above, and into the head) starts at zero. The new units then change nothing until training gives them outgoing weights, which it
    does from the first step (their H is not zero): capacity added without losing what was learned
    (Net2Net's aim, Chen et al. 2016, by the zero-output route)."""
    old_h, h = start.hidden_size, model.hidden_size
    state, own = start.state_dict(), model.state_dict()
    if old_h == h:
        return state
    grown, prefix, blocks = {}, model.cell + ".", GATE_BLOCKS[model.cell]
    for name, value in own.items():
        old = state[name]
        if not name.startswith(prefix) and name != "head.weight":
            grown[name] = old
            continue
        value = value.clone()
        if name == "head.weight":  # (vocab, H), in `start`'s vocabulary (load_by_character maps the rows): the
            value = old.new_zeros(old.shape[0], h)  # new units' columns stay zero
            value[:, :old_h] = old
        else:
            for gate in range(blocks):
                rows, old_rows = slice(gate * h, gate * h + old_h), slice(gate * old_h, (gate + 1) * old_h)
                if old.dim() == 1:  # a bias
                    value[rows] = old[old_rows]
                else:
                    value[rows, : old.shape[1]] = old[old_rows]
            if name.startswith(prefix + "weight_hh") or (name.startswith(prefix + "weight_ih") and not name.endswith("_l0")):
                value[:, old_h:] = 0  # out of the new units (H of this layer or of the one below)
        grown[name] = value
    return grown


def load_by_character(model: CharLSTM, start: CharLSTM) -> None:
    """`start`'s weights into `model` (same shape, or wider layers: `widened`), matched by character
    where the vocabularies differ: each known character keeps its embedding and output row wherever
    it now stands, the recurrent layers are copied whole, and characters `start` never saw keep their fresh
    embedding with an output bias at the least likely known character's (nothing suggests them yet)."""
    state = widened(model, start)
    if model.vocab != start.vocab:
        own = model.state_dict()
        rows = torch.tensor([model.vocab.index[ch] for ch in start.vocab.chars])
        new = torch.ones(len(model.vocab), dtype=torch.bool)
        new[rows] = False
        for name in ("embedding.weight", "head.weight", "head.bias"):
            grown = own[name].clone()
            grown[rows] = state[name].to(grown.dtype)
            if name == "head.bias":
                grown[new] = state[name].min()
            state[name] = grown
    model.load_state_dict(state)


def moving_average(model: CharLSTM, decay: float):
    """An exponential moving average of `model`'s weights (torch's AveragedModel), updated after
    each optimiser step: avg <- d * avg + (1 - d) * weights, with d = min(decay, (1 + n) / (10 + n))
    after n updates, so that the first steps (far from where training ends) weigh little."""
    from torch.optim.swa_utils import AveragedModel

    def blend(avg: torch.Tensor, weights: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg * d + weights * (1.0 - d)

    average = AveragedModel(model, avg_fn=blend, use_buffers=False)
    average.module.eval()
    return average


class Trainer:
    """One run: the model, its optimiser and schedule, the data, and where the run stands."""

    def __init__(self, c: TrainConfig, ddp: Dist, device: torch.device):
        start = vocab = None
        if c.init_from and not c.resume:  # on --resume the weights come from the checkpoint
            start, vocab, c = self._init_from(c)
        self.c, self.ddp, self.device = c, ddp, device
        self.state_path = os.path.join(c.out, STATE_NAME)
        self.metrics_path = os.path.join(c.out, "metrics.jsonl")
        torch.manual_seed(c.seed)
        try:
            self.data = TrainingData(c, device, ddp, vocab=vocab)
        except DataError as err:
            raise TrainingStopped(str(err)) from None
        size = parameter_count(len(self.data.vocab), c.embed_dim, c.hidden_size, c.num_layers, c.cell)
        if size > MAX_PARAMETERS:  # refused before anything is allocated
            raise TrainingStopped(f"These settings make a model of {size:,} parameters, over the limit of "
                                  f"{MAX_PARAMETERS:,}; lower --hidden-size, --embed-dim or --num-layers.")
        self.model = CharLSTM(
            vocab=self.data.vocab.chars, embed_dim=c.embed_dim, hidden_size=c.hidden_size, num_layers=c.num_layers,
            dropout=c.dropout, turn_separator=c.turn_separator, stop_sequence=c.stop_sequence,
            forget_bias=c.forget_bias, normalize=c.normalize, cell=c.cell,
        ).to(device)
        if start is not None:
            load_by_character(self.model, start)
        # What the loop calls: the model, or the model inside AWD-LSTM's regularisation (same weights).
        self.trained = (Regularized(self.model, c.weight_drop, c.locked_dropout, c.embed_dropout)
                        if c.weight_drop or c.locked_dropout or c.embed_dropout else self.model)
        self.average = moving_average(self.model, c.ema) if c.ema else None  # --ema: the weights saved
        if ddp.world > 1 and not c.resume:  # same initial weights everywhere, distinct dropout masks per rank
            torch.manual_seed(c.seed * 7919 + ddp.rank)
        self.total_steps = self.step_cap = c.max_steps or max(1, int(c.epochs * self.data.batches_per_epoch))
        self.elapsed_before, self.started = 0.0, time.perf_counter()  # training seconds of earlier sittings
        self.optimizer = make_optimizer(self.model, c)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, c.warmup_steps, self.total_steps, c.min_lr_ratio))
        self.step, self.epoch, self.batch_index, self.carry = 0, 0, 0, None
        self.run = Run(out=c.out, step=0)
        if c.resume:
            self._resume()
        elif ddp.main:
            open(self.metrics_path, "w").close()
            with open(os.path.join(c.out, "train_config.json"), "w", encoding="utf-8") as f:
                json.dump(dataclasses.asdict(c), f, indent=2)
        self.net = self._wrap()

    @staticmethod
    def _init_from(c: TrainConfig):
        """The model --init-from names, the vocabulary to train with, and the config with the
        model's shape (a note when the flags said otherwise). The vocabulary is the model's, or
        --vocab-from's where that one holds every character of the model's and more: a curriculum's
        next stage can meet characters the last one never saw (new names, "yes" and "no")."""
        try:
            start = load_model(c.init_from)
        except ModelLoadError as err:
            raise TrainingStopped(f"--init-from: {err}") from None
        shape = dict(embed_dim=start.embed_dim, hidden_size=start.hidden_size, num_layers=start.num_layers,
                     cell=start.cell)
        defaults = TrainConfig()  # a flag left at its default was not asked for: no note about it
        if c.widen is not None:
            if c.widen < start.hidden_size:
                raise TrainingStopped(f"--widen {c.widen} is narrower than the --init-from model's {start.hidden_size} "
                                      f"units per layer; give at least {start.hidden_size}, or leave --widen out.")
            shape["hidden_size"] = c.widen  # load_by_character grows the layers
            print(f"note: widening --init-from {c.init_from} from {start.hidden_size} to {c.widen} units per layer; "
                  "the new units start silent (no weight out of them), so training starts from what the model "
                  "computed", file=sys.stderr)
        other = {k: getattr(c, k) for k, v in shape.items() if getattr(c, k) not in (v, getattr(defaults, k))}
        if other:
            print(f"note: --init-from {c.init_from} is {start.num_layers} x {start.hidden_size} {start.cell} with "
                  f"{start.embed_dim}-dim embeddings; training that shape, not {other}", file=sys.stderr)
        vocab, vocab_from = start.vocab, c.init_from
        if c.vocab_from not in (None, c.init_from):
            try:
                wider = load_model(c.vocab_from).vocab
            except ModelLoadError as err:
                raise TrainingStopped(f"--vocab-from: {err}") from None
            missing = [ch for ch in start.vocab.chars if ch not in wider]
            if missing:
                raise TrainingStopped(
                    f"--vocab-from {c.vocab_from} lacks {len(missing)} of the characters the --init-from model "
                    f"knows ({''.join(missing[:12])!r}); name a vocabulary that holds them all, or leave "
                    "--vocab-from out to train with the --init-from model's.")
            if len(wider) > len(start.vocab):
                print(f"note: the vocabulary grows from {len(start.vocab)} characters (--init-from's) to "
                      f"{len(wider)} (--vocab-from's); the new ones start untrained", file=sys.stderr)
            vocab, vocab_from = wider, c.vocab_from
        # vocab_from too, so that --resume (which skips this) reads the same vocabulary
        return start, vocab, dataclasses.replace(c, vocab_from=vocab_from, **shape)

    def _resume(self) -> None:
        c, ddp = self.c, self.ddp
        meta, carry = load_training_state(self.state_path, self.model, self.optimizer, self.scheduler, self.device,
                                          ddp.rank, self.average)
        self.step, self.epoch, self.batch_index = meta["step"], meta["epoch"], meta["batch_index"]
        self.elapsed_before = meta.get("elapsed", 0.0)
        self.run = Run(out=c.out, step=self.step, metrics=meta.get("metrics", {}))
        if carry is not None:
            self.carry = (carry[0][:, ddp.rows(c.batch_size)], carry[1][:, ddp.rows(c.batch_size)])
        if ddp.main:
            _truncate_log(self.metrics_path, self.step)
            print(f"Resuming {c.out} at step {self.step} (epoch {self.epoch}, batch {self.batch_index}).",
                  file=sys.stderr)

    def _wrap(self):
        """The model as the loop calls it: DistributedDataParallel under torchrun."""
        if self.ddp.world == 1:
            return self.trained
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(self.trained, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.c.resume:  # the checkpoint was read by every rank: make sure all hold rank 0's copy
            for p in self.model.parameters():
                torch.distributed.broadcast(p.data, 0)
        return net

    def checkpoint(self) -> None:
        """Save where the run stands. Collective first (every rank takes part), then rank 0 writes."""
        ddp, carry = self.ddp, self.carry
        full_carry = None
        if carry is not None:
            full_carry = (ddp.gather_rows(carry[0].contiguous()), ddp.gather_rows(carry[1].contiguous()))
        rng_states = ddp.gather_rows(torch.get_rng_state()[None], dim=0)
        if not ddp.main:
            return
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingStopped(f"The weights became NaN or infinite by step {self.step}; nothing was saved, "
                                  f"{self.kept()}. Lower --lr or --grad-clip and --resume.")
        meta = {"step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
                "config": dataclasses.asdict(self.c), "metrics": self.run.metrics, "total_steps": self.total_steps,
                "world_size": ddp.world, "elapsed": self.elapsed()}
        try:
            save_training_state(self.state_path, self.model, self.optimizer, self.scheduler, meta, full_carry, rng_states,
                                self.average)
            save_model_folder(self.c.out, self.served)
        except OSError as err:
            raise TrainingStopped(f"Could not save the checkpoint in {self.c.out} ({err.strerror or err}); free disk "
                                  "space or choose another --out, then --resume.") from None

    @property
    def served(self) -> CharLSTM:
        """The weights evaluated, saved and served: their moving average with --ema, else themselves."""
        return self.model if self.average is None else self.average.module

    def kept(self) -> str:
        """What a stopped run leaves: the checkpoint that really exists."""
        if os.path.isfile(self.state_path):
            try:
                step = read_state_metadata(self.state_path)["step"]
                return f"the last good checkpoint (step {step}) in {self.c.out} is kept"
            except StateError:
                return f"the checkpoint in {self.c.out} is damaged"
        return f"no checkpoint was written yet in {self.c.out}"

    def elapsed(self) -> float:
        """Seconds spent training in this run, earlier sittings included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def fit_to_time(self, steps_this_sitting: int) -> None:
        """With --time-limit: set the run's length to the steps that fit in the time left at the
        speed of this sitting so far (the cosine schedule follows)."""
        limit, elapsed = self.c.time_limit, self.elapsed()
        rate = steps_this_sitting / max(1e-9, time.perf_counter() - self.started)
        total = self.step if elapsed >= limit else self.step + max(1, int(rate * (limit - elapsed)))
        if self.ddp.world > 1:
            total = int(self.ddp.mean(total))  # the same figure on every rank
        self.total_steps = max(self.step, min(self.step_cap, total))

    def train_step(self, x, y, m=None, s=None) -> float:
        """One optimiser step on a batch, the state carried in and detached out; the loss (over the
        targets `m` marks, if given: a chat's replies); where `s` marks a conversation's beginning,
        that row's state is zeroed first (CharLSTM.forward's `starts`)."""
        if self.carry is None or self.carry[0].shape[1] != x.shape[0]:
            self.carry = self.model.begin_state(x.shape[0])
        logits, new_state = self.net(x, self.carry, s)
        if m is None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:  # a batch with no reply character in it still steps (with a zero loss), as every rank must
            losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
            loss = (losses * m.reshape(-1)).sum() / m.sum().clamp(min=1)
        value = self.ddp.mean(loss.item())
        if not math.isfinite(value):
            raise TrainingStopped(f"The loss became {value} at step {self.step + 1}; training stopped and "
                                  f"{self.kept()}. Lower --lr or --grad-clip and --resume.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.c.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        self.carry = (new_state[0].detach(), new_state[1].detach())
        return value

    def estimate_loss(self, bar, rate: float) -> None:
        """Train and validation loss (rank 0), logged, printed and plotted."""
        est = self.data.estimate_loss(self.served)
        raw = ""
        if self.average is not None:  # the weights themselves too: what the average gains
            est["val_loss_weights"] = self.data.estimate_loss(self.model)["val_loss"]
            raw = f" (the weights themselves {est['val_loss_weights']:.4f}; this is their average)"
        self.run.metrics = dict(est, step=self.step)
        _log(self.metrics_path, dict(est, step=self.step, epoch=self.epoch, chars_per_s=rate, time=time.time()))
        bar.write(f"step {self.step}: train {est['train_loss']:.4f} nats ({est['train_bpc']:.3f} bpc), "
                  f"val {est['val_loss']:.4f} nats ({est['val_bpc']:.3f} bpc){raw}, {rate:,.0f} chars/s")
        plot_losses(self.c.out)

    def loop(self, bar) -> None:
        """Train until `total_steps`, evaluating and checkpointing on schedule."""
        c, ddp = self.c, self.ddp
        every = c.checkpoint_every or c.eval_every
        chars_seen, t0, first_step = 0, time.perf_counter(), self.step
        self.started = t0
        if c.time_limit:
            self.fit_to_time(0)
        self.trained.train()
        while self.step < self.total_steps:
            for index, x, y, m, s in self.data.epoch_batches(self.epoch, self.batch_index):
                value = self.train_step(x, y, m, s)
                self.step, self.batch_index = self.step + 1, index + 1
                if c.time_limit:
                    self.fit_to_time(self.step - first_step)
                    bar.total = self.total_steps
                self.run.losses.append(value)
                chars_seen += y.numel() * ddp.world
                rate = chars_seen / max(1e-9, time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", chars_s=f"{rate:,.0f}", refresh=False)
                last = self.step >= self.total_steps
                if ddp.main:
                    _log(self.metrics_path, {"step": self.step, "loss": value, "lr": self.scheduler.get_last_lr()[0]})
                    if self.step % c.eval_every == 0 or last:  # rank 0 evaluates
                        self.estimate_loss(bar, rate)
                if self.step % every == 0 or last:
                    self.checkpoint()
                if last:
                    return
            self.epoch, self.batch_index, self.carry = self.epoch + 1, 0, None


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


def _prepare_out(c: TrainConfig, ddp: Dist) -> None:
    """A writable --out that holds a run exactly when --resume asks for one."""
    if c.batch_size % ddp.world:
        raise TrainingStopped(f"--batch-size {c.batch_size} must be divisible by the {ddp.world} processes.")
    try:
        os.makedirs(c.out, exist_ok=True)
        if ddp.main:
            os.remove(atomic_path(os.path.join(c.out, "probe")))
    except OSError as err:
        raise TrainingStopped(f"Cannot write to the output folder {c.out} ({err.strerror or err}); choose a writable --out.") from None
    if ddp.main:
        remove_stale_temporaries(c.out)
    has_run = os.path.isfile(os.path.join(c.out, STATE_NAME))
    has_model = any(os.path.isfile(os.path.join(c.out, name)) for name in (CONFIG_NAME, WEIGHTS_NAME))
    if c.resume and not has_run:
        raise TrainingStopped(f"--resume found no {STATE_NAME} in {c.out}; start without --resume or point --out at the run.")
    if not c.resume and not c.overwrite and has_run:
        raise TrainingStopped(f"{c.out} already holds a training run; add --resume to continue it, --overwrite to "
                              "start it again, or choose another --out.")
    if not c.resume and not c.overwrite and has_model:
        raise TrainingStopped(f"{c.out} already holds a model; choose another --out, or add --overwrite to replace it.")


def _train(c: TrainConfig, command: str, ddp: Dist, device: torch.device) -> Run:
    _prepare_out(c, ddp)
    trainer = Trainer(c, ddp, device)
    if ddp.main:
        print(f"Training a {trainer.model.num_parameters():,}-parameter CharLSTM ({c.cell}) on {c.dataset} "
              f"({trainer.data.train_chars:,} training characters, {len(trainer.data.vocab)} in the vocabulary, "
              f"validation: {trainer.data.val_from}) on {device}"
              + (f" x {ddp.world} processes" if ddp.world > 1 else "") + f" for {trainer.total_steps} steps.",
              file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=trainer.total_steps, initial=trainer.step, disable=c.quiet or not ddp.main or None,
               dynamic_ncols=True, unit="step")
    try:  # a SIGTERM (e.g. from a job scheduler) saves like Ctrl-C; only possible in the main thread
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:
        previous_handler = None
    run = trainer.run
    try:
        trainer.loop(bar)
    except KeyboardInterrupt:
        bar.close()
        trainer.checkpoint()
        run.step, run.stopped = trainer.step, "interrupted"
        if ddp.main:
            print(f"\nInterrupted: saved step {trainer.step} in {c.out}; continue with --resume.", file=sys.stderr)
        return run
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    run.step = trainer.step
    if ddp.main:  # trainer.c: with --init-from it holds the shape trained, not the flags' defaults
        finish(trainer.c, trainer.served, trainer.data, run, command)
    return run


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


def finish(c: TrainConfig, model: CharLSTM, data: TrainingData, run: Run, command: str) -> None:
    """Final whole-split validation, the model card, and the optional push."""
    model.eval()
    if data.val_ids is not None:
        scored = "" if data.val_mask is None else f", the loss on its {int(data.val_mask.sum()):,} reply characters"
        if data.val_starts is None:
            full = whole_text_loss(model, data.val_ids, data.val_mask)
            read = "state carried"
        else:
            full = conversation_loss(model, data.val_ids, data.val_starts, data.val_mask)
            read = f"{len(data.val_starts):,} conversations, each from a fresh state as a new chat"
        run.metrics.update(val_loss_full=full, val_bpc_full=full / LN2)
        print(f"Validation over the whole held-out text ({data.val_ids.numel():,} characters, {read}{scored}): "
              f"{full:.4f} nats/char ({full / LN2:.3f} bits/char).", file=sys.stderr)
    cpu_model = model.to("cpu")
    if data.val_ids is not None and pick_engine(cpu_model) == "onnxruntime":  # may int8 steps serve it?
        check = check_int8(cpu_model, data.val_ids.cpu(), text=f"validation ({data.val_from})",
                           mask=None if data.val_mask is None else data.val_mask.cpu(), starts=data.val_starts)
        write_json(os.path.join(c.out, INT8_CHECK_FILE), check)
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
        metrics=run.metrics, sample=sample, command=command, language=c.language,
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
    except (TrainingStopped, DataError, ModelLoadError, StateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, BadSettings) else 1  # 2: a bad argument, as argparse's own errors
    return 130 if run.stopped == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
