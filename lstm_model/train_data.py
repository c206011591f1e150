"""The data a training run reads: training batches from a resumable position, and the validation
text, for in-memory or streaming corpora (lstm_model.data), split between torchrun ranks."""

from __future__ import annotations

import collections
import math
import sys

import torch

from .data import (
    StreamBatches,
    StreamingCorpus,
    batchify,
    conversation_streams,
    encode,
    encode_masked,
    encoded_offsets,
    get_batch,
    load_corpus,
    num_batches,
)
from .distributed import Dist
from .evaluate import conversation_loss, stream_loss
from .hub import ModelLoadError, load_model
from .model import CharLSTM
from .train_config import TrainConfig, TrainingStopped

LN2 = math.log(2)


def join_batches(batches) -> torch.Tensor:
    """Consecutive (inputs, targets) batches of contiguous streams joined back into the streams
    (batch, length): each batch's inputs, then the last targets' final column."""
    return torch.cat([x for x, _ in batches] + [batches[-1][1][:, -1:]], dim=1)


def report_skipped(vocab, text: str) -> None:
    """Say (on stderr) which characters of the training text a vocabulary taken from a model
    (--vocab-from, --init-from) lacks and how many of each are skipped: they are never trained on,
    and a model cannot write them."""
    missing = collections.Counter({ch: n for ch, n in collections.Counter(text).items() if ch not in vocab.index})
    if missing:
        counts = ", ".join(f"{ch!r} x {n:,}" for ch, n in missing.most_common(8))
        print(f"note: {sum(missing.values()):,} characters of the training text are not in the model's vocabulary "
              f"and are skipped ({counts}); to train on them, give --vocab-from a model whose vocabulary "
              "holds them.", file=sys.stderr)


class TrainingData:
    """Training and validation batches for in-memory or streaming corpora, with a resumable position."""

    def __init__(self, c: TrainConfig, device, ddp: Dist | None = None, vocab=None):
        """`vocab`: a vocabulary already loaded (--init-from's model's); else --vocab-from's, or the data's."""
        self.c, self.device, self.ddp = c, device, ddp or Dist()
        if vocab is None and c.vocab_from:
            try:
                vocab = load_model(c.vocab_from).vocab
            except ModelLoadError as err:
                raise TrainingStopped(f"--vocab-from: {err}") from None
        self.train_mask = self.val_mask = self.val_mask_streams = None  # --loss-on replies: the replies' characters
        # --conversation-state fresh (a chat dataset): where each conversation begins in train_ids/val_ids
        self.train_starts = self.val_starts = None
        self._layout: tuple | None = None  # (epoch, streams, targets, begins) of the conversations' layout
        if c.streaming and c.loss_on == "replies":
            raise TrainingStopped("--loss-on replies reads the chat dataset in memory; drop --streaming.")
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
            self.val_streams = join_batches(list(zip(xs, ys)))
            self.val_ids = None
            self.batches_per_epoch = len(self.train)
            self.val_from = self.corpus.val_from
            self.train_chars = self.corpus.length("train")
        else:
            corpus = load_corpus(c.dataset, c.revision, c.text_column, c.val_fraction, c.train_split, c.val_split,
                                 chat=(c.turn_separator, c.stop_sequence, c.normalize))
            self.vocab = vocab or corpus.vocab()
            if vocab is not None:
                report_skipped(self.vocab, corpus.train)
            if c.loss_on == "replies":
                if corpus.train_mask is None:
                    raise TrainingStopped(f"--loss-on replies needs a chat dataset (a 'messages' column of user and "
                                          f"assistant turns); {c.dataset} is plain text. Use --loss-on all.")
                self.train_ids, self.train_mask = encode_masked(self.vocab, corpus.train, corpus.train_mask)
                self.val_ids, self.val_mask = encode_masked(self.vocab, corpus.val, corpus.val_mask)
                self.val_mask_streams = batchify(self.val_mask, min(c.batch_size, 16)).to(device)
            else:
                self.train_ids = encode(self.vocab, corpus.train)
                self.val_ids = encode(self.vocab, corpus.val)
            self.val_streams = batchify(self.val_ids, min(c.batch_size, 16)).to(device)
            if corpus.train_starts is not None and c.conversation_state == "fresh":
                self.train_starts = encoded_offsets(self.vocab, corpus.train, corpus.train_starts)
                self.val_starts = encoded_offsets(self.vocab, corpus.val, corpus.val_starts)
                self.batches_per_epoch = num_batches(self.layout(0)[1], c.seq_len)  # whole windows, at least one
            else:
                self.batches_per_epoch = num_batches(batchify(self.train_ids, c.batch_size), c.seq_len)
            self.val_from = corpus.val_from
            self.train_chars = len(corpus.train)
        row = self.train.row_len if c.streaming else self.train_ids.numel() // c.batch_size
        if self.train_starts is None and c.seq_len >= row:
            raise TrainingStopped(f"--seq-len {c.seq_len} is longer than each of the {c.batch_size} training streams "
                                  f"({row:,} characters); lower --seq-len or --batch-size.")
        if self.batches_per_epoch < 1:
            raise TrainingStopped("The training text is too short for this --batch-size and --seq-len; lower them.")

    def epoch_streams(self, epoch: int, all_rows: bool = False, of: torch.Tensor | None = None) -> torch.Tensor:
        """The training text (or `of`, its reply mask) as (batch, length) streams (this rank's rows
        unless `all_rows`); each epoch after the first starts at a random offset (seeded), so BPTT
        windows fall at new places."""
        offset = 0
        if epoch > 0:
            g = torch.Generator().manual_seed(self.c.seed * 1000 + epoch)
            offset = int(torch.randint(0, self.c.seq_len, (1,), generator=g))
        streams = batchify((self.train_ids if of is None else of)[offset:], self.c.batch_size)
        return (streams if all_rows else streams[self.ddp.rows(self.c.batch_size)]).to(self.device)

    def layout(self, epoch: int) -> tuple:
        """(epoch, streams, targets, begins) of --conversation-state fresh for `epoch` (all rows, on
        the CPU): `data.conversation_streams`, the conversations in a new order each epoch."""
        if self._layout is None or self._layout[0] != epoch:
            self._layout = (epoch, *conversation_streams(self.train_ids, self.train_starts, self.c.batch_size,
                                                         self.c.seq_len, self.train_mask, seed=self.c.seed * 1000 + epoch))
        return self._layout

    def epoch_batches(self, epoch: int, start: int):
        """Yield (index, x, y, m, s) for one epoch from batch `start`; m marks the targets that count
        (the replies' characters with --loss-on replies; None when all do); s, with
        --conversation-state fresh, where a conversation begins in x (its row's state is zeroed
        there), else None."""
        if self.c.streaming:
            for index, x, y in self.train.iterate(start):
                yield index, x.to(self.device), y.to(self.device), None, None
            return
        if self.train_starts is not None:
            _, streams, targets, begins = self.layout(epoch)
            rows = self.ddp.rows(self.c.batch_size)
            streams, targets, begins = (t[rows].to(self.device) for t in (streams, targets, begins))
            for index in range(start, num_batches(streams, self.c.seq_len)):
                x, y = get_batch(streams, index, self.c.seq_len)
                yield index, x, y, get_batch(targets, index, self.c.seq_len)[1], get_batch(begins, index, self.c.seq_len)[0]
            return
        streams = self.epoch_streams(epoch)
        masks = None if self.train_mask is None else self.epoch_streams(epoch, of=self.train_mask)
        for index in range(start, num_batches(streams, self.c.seq_len)):
            x, y = get_batch(streams, index, self.c.seq_len)
            yield index, x, y, None if masks is None else get_batch(masks, index, self.c.seq_len)[1], None

    def estimate_loss(self, model: CharLSTM) -> dict:
        """Train and validation loss in eval mode over `eval_batches` contiguous batches each (with
        --conversation-state fresh: over the first 16 x `eval_batches` conversations of each, each
        read from a fresh state)."""
        c = self.c
        if c.streaming:
            val = stream_loss(model, self.val_streams, c.seq_len)
            train_batches = []
            for _, x, y in self.train.iterate(0):
                train_batches.append((x, y))
                if len(train_batches) >= c.eval_batches:
                    break
            train = stream_loss(model, join_batches(train_batches), c.seq_len)
        elif self.train_starts is not None:  # conversations from a fresh state, as the chat reads them
            limit = c.eval_batches * 16
            val = conversation_loss(model, self.val_ids, self.val_starts, self.val_mask, limit=limit)
            train = conversation_loss(model, self.train_ids, self.train_starts, self.train_mask, limit=limit)
        else:
            val = stream_loss(model, self.val_streams, c.seq_len, c.eval_batches, mask=self.val_mask_streams)
            train_mask = None if self.train_mask is None else self.epoch_streams(0, all_rows=True, of=self.train_mask)
            train = stream_loss(model, self.epoch_streams(0, all_rows=True), c.seq_len, c.eval_batches, mask=train_mask)
        return {"train_loss": train, "val_loss": val, "train_bpc": train / LN2, "val_bpc": val / LN2}
