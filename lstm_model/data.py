"""Corpora through `datasets`: Hub ids, local files and folders, streaming; splits; BPTT batches.

How rows become one character stream: the text column of every row, in order, joined with a
single newline between rows ("\\n".join(rows)). A plain-text file is read as one row (the whole
file, newlines kept), so a .txt corpus is exactly the file's characters; a folder of .txt files is
one row per file.

Validation: the dataset's own validation split when it has one (`validation`, `valid`, `val`,
`dev`); otherwise the last `val_fraction` of the joined training text (nanoGPT's split), so the
model never trains on it.
"""

from __future__ import annotations

import heapq
import os
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import torch

from .sources import is_local
from .vocab import CharVocab

DEFAULT_DATASET = "karpathy/tiny_shakespeare"
# On datasets >= 4 this repository's loading script no longer runs; its Parquet conversion does.
DEFAULT_REVISIONS = {"karpathy/tiny_shakespeare": "refs/convert/parquet"}
VALIDATION_SPLITS = ("validation", "valid", "val", "dev")
BUILDERS = {".txt": "text", ".text": "text", ".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class DataError(ValueError):
    """A corpus that cannot be loaded; the message says what to do instead."""


@dataclass
class Corpus:
    """A training and a validation text, and where they came from."""

    train: str
    val: str
    source: str
    revision: str | None = None
    val_from: str = "fraction"  # "split" when the dataset had a validation split
    # A chat dataset (a `messages` column): per character of train/val, whether it is the
    # assistant's (a reply or the stop sequence after it). None for plain text.
    train_mask: list[bool] | None = None
    val_mask: list[bool] | None = None
    # A chat dataset: where each conversation begins in train/val (character offsets). None for plain text.
    train_starts: list[int] | None = None
    val_starts: list[int] | None = None

    def vocab(self) -> CharVocab:
        return CharVocab.from_text((self.train, self.val))


# -- locating and loading -----------------------------------------------------------------------


def default_revision(dataset: str, revision: str | None) -> str | None:
    return revision if revision else DEFAULT_REVISIONS.get(dataset)


def _local_data_files(path: str) -> tuple[str, list[str]]:
    """The `datasets` builder and the files for a local file or a folder of files."""
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        if ext not in BUILDERS:
            raise DataError(f"{path} is a {ext or 'extensionless'} file; use a .txt, .parquet, .jsonl, .csv file or a folder of them.")
        return BUILDERS[ext], [path]
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if os.path.splitext(name)[1].lower() in BUILDERS and not name.startswith(".")
    )
    if not files:
        raise DataError(f"{path} holds no .txt, .parquet, .jsonl or .csv files and is not a save_to_disk folder.")
    builders = {BUILDERS[os.path.splitext(f)[1].lower()] for f in files}
    if len(builders) > 1:
        raise DataError(f"{path} mixes file types ({', '.join(sorted(builders))}); put one type of file in the folder.")
    return builders.pop(), files


def _is_saved_dataset(path: str) -> bool:
    names = set(os.listdir(path))
    return "dataset_dict.json" in names or ("state.json" in names and "dataset_info.json" in names)


def hub_url() -> str:
    """The Hub's address: HF_ENDPOINT (a mirror, or a local stand-in in the tests) or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    """Whether the Hub is switched off on purpose (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set)."""
    return any(os.environ.get(name, "0").lower() in ("1", "true", "yes", "on") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_endpoint() -> tuple[str, int]:
    url = urlparse(hub_url())
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


_PROBES: dict[tuple[str, int], tuple[float, bool]] = {}  # endpoint -> (when, answer)
PROBE_SECONDS = 30.0  # one probe answers for this long: loading a model asks several times


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers a TCP connection within `timeout` seconds (never when offline)."""
    if hub_offline():
        return False
    endpoint, now = _hub_endpoint(), time.monotonic()
    when, answer = _PROBES.get(endpoint, (-PROBE_SECONDS, False))
    if now - when < PROBE_SECONDS:
        return answer
    try:
        with socket.create_connection(endpoint, timeout=timeout):
            answer = True
    except OSError:
        answer = False
    _PROBES[endpoint] = (time.monotonic(), answer)
    return answer


def load_dataset_dict(dataset: str, revision: str | None = None, streaming: bool = False):
    """A `datasets.DatasetDict` (or IterableDatasetDict) for a Hub id, local file or folder."""
    import datasets

    if is_local(dataset):
        if os.path.isdir(dataset) and _is_saved_dataset(dataset):
            loaded = datasets.load_from_disk(dataset)
            if isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
            if streaming:
                loaded = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
            return loaded
        builder, files = _local_data_files(dataset)
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        try:
            return datasets.load_dataset(builder, data_files={"train": files}, streaming=streaming, **kwargs)
        except Exception as err:
            raise DataError(f"Could not read {dataset} as {builder} data ({type(err).__name__}: {err}); check the file's format.") from None
    if dataset.startswith((".", "/", "~")) or dataset.count("/") > 1 or os.sep in dataset.replace("/", "", 1):
        raise DataError(f"{dataset} does not exist; give an existing file or folder, or a Hub dataset id like user/name.")
    revision = default_revision(dataset, revision)
    start = time.monotonic()
    offline = not hub_reachable()
    was_offline = datasets.config.HF_HUB_OFFLINE
    try:
        # Offline only a local cache can help: make `datasets` fail at once instead of retrying.
        datasets.config.HF_HUB_OFFLINE = offline
        return datasets.load_dataset(dataset, revision=revision, streaming=streaming)
    except Exception as err:
        raise DataError(_dataset_error(dataset, revision, err, offline, time.monotonic() - start)) from None
    finally:
        datasets.config.HF_HUB_OFFLINE = was_offline


def _dataset_error(dataset: str, revision: str | None, err: Exception, offline: bool, waited: float) -> str:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError, RevisionNotFoundError

    local = "or pass a local path, e.g. --dataset path/to/corpus.txt."
    if offline:
        why = ("HF_HUB_OFFLINE is set" if hub_offline() else f"the Hugging Face Hub ({hub_url()}) cannot be reached")
        return (f"Could not load the dataset '{dataset}': {why} and it is not in the local cache; "
                f"{'unset HF_HUB_OFFLINE' if hub_offline() else 'connect to the internet'}, {local}")
    chain = [err, err.__cause__, err.__context__]
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated" in str(err).lower():
        return (f"The dataset '{dataset}' is gated: accept its conditions on its Hub page and log in with "
                f"`hf auth login` (or set HF_TOKEN), {local}")
    if any(isinstance(e, RevisionNotFoundError) for e in chain) or (revision and "revision" in str(err).lower()):
        return f"The dataset '{dataset}' has no branch, tag or commit '{revision}'; check --revision, {local}"
    if isinstance(err, DatasetNotFoundError):
        return (f"There is no dataset '{dataset}' on the Hub (or it is private and you are not logged in); "
                f"check the id or log in with `hf auth login`, {local}")
    return (f"Could not load the dataset '{dataset}'" + (f" at revision {revision}" if revision else "")
            + f" ({type(err).__name__} after {waited:.0f}s: {str(err).splitlines()[0] if str(err) else ''}); "
            f"check the id and revision, {local}")


def _text_column(features_or_names, text_column: str | None, source: str) -> str:
    names = list(features_or_names)
    if text_column:
        if text_column not in names:
            raise DataError(f"{source} has no column '{text_column}'; its columns are {names}. Pass one with --text-column.")
        return text_column
    if "text" in names:
        return "text"
    if len(names) == 1:
        return names[0]
    raise DataError(f"{source} has several columns {names} and none is called 'text'; choose one with --text-column.")


def _split_names(dd, train_split: str | None, val_split: str | None):
    names = list(dd.keys())
    train = train_split or ("train" if "train" in names else names[0])
    if train not in names:
        raise DataError(f"The dataset has no split '{train}'; its splits are {names}.")
    if val_split:
        if val_split not in names:
            raise DataError(f"The dataset has no split '{val_split}'; its splits are {names}.")
        return train, val_split
    val = next((n for n in VALIDATION_SPLITS if n in names and n != train), None)
    return train, val


def _text_of(value, column: str, source: str):
    """A row's text, or DataError when the column holds something else (numbers, lists)."""
    if value is None or isinstance(value, str):
        return value
    raise DataError(f"The column '{column}' of {source} holds {type(value).__name__} values (e.g. {str(value)[:40]!r}), "
                    "not text; choose a text column with --text-column.")


def _join_rows(ds, column: str, source: str = "the dataset") -> str:
    return "\n".join(t for t in (_text_of(v, column, source) for v in ds[column]) if t is not None)


def render_chats(ds, source: str, chat: tuple[str, str]) -> tuple[str, list[bool], list[int]]:
    """Every conversation of a `messages` column (of a dataset, or a dict holding one), one after
    another, as the chat feeds it (each user message + the turn separator, each reply + the stop
    sequence), with the reply mask and the offset where each conversation begins."""
    from .memory_tasks import render  # here, so that `python -m lstm_model.memory_tasks` runs it only once

    texts, masks, starts, at = [], [], [], 0
    for messages in ds["messages"]:
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                      and m.get("role") in ("user", "assistant", "system")
                                                      for m in messages):
            raise DataError(f"The 'messages' column of {source} must hold lists of {{'role', 'content'}} messages "
                            "(roles user and assistant); it holds something else.")
        text, mask = render([m for m in messages if m["role"] != "system"], *chat)
        if text:
            texts.append(text)
            masks += mask
            starts.append(at)
            at += len(text)
    return "".join(texts), masks, starts


def load_corpus(
    dataset: str = DEFAULT_DATASET,
    revision: str | None = None,
    text_column: str | None = None,
    val_fraction: float = 0.1,
    train_split: str | None = None,
    val_split: str | None = None,
    chat: tuple[str, str] | None = None,
) -> Corpus:
    """Load a whole corpus into memory as a training and a validation string.

    A dataset with a `messages` column (the Hub's chat convention) and no --text-column is read as
    conversations, rendered with `chat` = (turn separator, stop sequence) as the app feeds them,
    with a mask of the replies' characters (`Corpus.train_mask`, `.val_mask`)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1 (exclusive); got {val_fraction}.")
    dd = load_dataset_dict(dataset, revision)
    train_name, val_name = _split_names(dd, train_split, val_split)
    rev = default_revision(dataset, revision) if not is_local(dataset) else None
    names = dd[train_name].column_names
    if "messages" in names and text_column in (None, "messages"):
        chat = chat or ("\n\n", "\n\n")
        train, train_mask, train_starts = render_chats(dd[train_name], dataset, chat)
        if val_name is not None:
            val, val_mask, val_starts = render_chats(dd[val_name], dataset, chat)
            corpus = Corpus(train, val, dataset, rev, f"split:{val_name}", train_mask, val_mask, train_starts, val_starts)
        else:  # held out from the end, cut where a conversation begins (mid-conversation if there is one only)
            cut = int(len(train) * (1.0 - val_fraction))
            cut = next((s for s in train_starts if s >= cut and s > 0), cut)
            corpus = Corpus(train[:cut], train[cut:], dataset, rev, f"last {val_fraction:g}", train_mask[:cut],
                            train_mask[cut:], [s for s in train_starts if s < cut],
                            [0] + [s - cut for s in train_starts if s > cut])
        if len(corpus.train) < 2 or len(corpus.val) < 2:
            raise DataError(f"{dataset} is too small to split into training and validation text; give a longer corpus.")
        return corpus
    column = _text_column(names, text_column, dataset)
    train = _join_rows(dd[train_name], column, dataset)
    if val_name is not None:
        val = _join_rows(dd[val_name], column, dataset)
        corpus = Corpus(train=train, val=val, source=dataset, revision=rev, val_from=f"split:{val_name}")
    else:
        cut = int(len(train) * (1.0 - val_fraction))
        corpus = Corpus(train=train[:cut], val=train[cut:], source=dataset, revision=rev, val_from=f"last {val_fraction:g}")
    if len(corpus.train) < 2 or len(corpus.val) < 2:
        raise DataError(f"{dataset} is too small to split into training and validation text; give a longer corpus.")
    return corpus


# -- streaming ---------------------------------------------------------------------------------


class StreamingCorpus:
    """A corpus larger than memory: the rows of an IterableDataset read as one character stream.

    A first pass counts the characters (and collects the vocabulary unless one is given); with
    no validation split the last `val_fraction` of the characters is held out by position.
    """

    def __init__(self, dataset, revision=None, text_column=None, val_fraction=0.1, train_split=None, val_split=None,
                 vocab: CharVocab | None = None):
        self.source = dataset
        self.revision = default_revision(dataset, revision) if not is_local(dataset) else None
        dd = load_dataset_dict(dataset, revision, streaming=True)
        train_name, val_name = _split_names(dd, train_split, val_split)
        self._train = dd[train_name]
        self._val = dd[val_name] if val_name else None
        try:
            names = self._train.column_names or list(next(iter(self._train)).keys())
            if "messages" in names and text_column in (None, "messages"):
                raise DataError(f"{dataset} is a chat dataset (a 'messages' column); chat datasets are read in "
                                "memory: drop --streaming.")
            self.column = _text_column(names, text_column, dataset)
            total, val_total, chars = self._count(vocab is None)
        except DataError:
            raise
        except StopIteration:
            raise DataError(f"{dataset} holds no text; give a corpus with some characters in it.") from None
        except Exception as err:  # the reader's own errors (a binary file, a broken row) while streaming
            raise DataError(f"Could not read {dataset} ({type(err).__name__}: {str(err)[:120]}); check that it is "
                            "UTF-8 text in a .txt, .parquet, .jsonl or .csv file.") from None
        if total + val_total < 2 or (vocab is None and not chars):
            raise DataError(f"{dataset} is too small to split into training and validation text; give a longer corpus.")
        if self._val is not None:
            self.train_range, self.val_range = (0, total), (0, val_total)
            self.val_from = f"split:{val_name}"
        else:
            cut = int(total * (1.0 - val_fraction))
            self.train_range, self.val_range = (0, cut), (cut, total)
            self.val_from = f"last {val_fraction:g}"
        self._vocab = vocab or CharVocab(sorted(chars))

    def _count(self, collect: bool) -> tuple[int, int, set[str]]:
        """The first pass: characters in the training and validation streams, and (if `collect`)
        the characters seen."""
        chars: set[str] = set()
        totals = []
        for ds in (self._train, self._val):
            total = 0
            for piece in self._pieces(ds) if ds is not None else ():
                total += len(piece)
                if collect:
                    chars.update(piece)
            totals.append(total)
        return totals[0], totals[1], chars

    def vocab(self) -> CharVocab:
        return self._vocab

    def _pieces(self, ds):
        first = True
        for row in ds:
            text = _text_of(row.get(self.column), self.column, self.source)
            if text is None:
                continue
            if not first:
                yield "\n"
            first = False
            yield text

    def chars(self, split: str, start: int, end: int, chunk: int = 1 << 16):
        """Yield the characters [start, end) of a split's stream, in chunks of text."""
        if split == "train":
            ds, (lo, hi) = self._train, self.train_range
        else:
            ds, (lo, hi) = (self._val, self.val_range) if self._val is not None else (self._train, self.val_range)
        start, end = lo + start, min(hi, lo + end)
        pos = 0
        for piece in self._pieces(ds):
            nxt = pos + len(piece)
            if nxt > start and pos < end:
                yield piece[max(0, start - pos): min(len(piece), end - pos)]
            pos = nxt
            if pos >= end:
                return

    def length(self, split: str) -> int:
        lo, hi = self.train_range if split == "train" else self.val_range
        return hi - lo


# -- batches for truncated BPTT ----------------------------------------------------------------


def encode(vocab: CharVocab, text: str) -> torch.Tensor:
    """The whole text as a 1-D LongTensor of ids (characters outside the vocabulary skipped)."""
    return torch.tensor(vocab.encode(text), dtype=torch.long)


def encode_masked(vocab: CharVocab, text: str, mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """`encode` and the per-character mask that goes with it (the same characters skipped)."""
    index = vocab.index
    kept = [(index[ch], m) for ch, m in zip(text, mask, strict=True) if ch in index]
    return (torch.tensor([i for i, _ in kept], dtype=torch.long), torch.tensor([m for _, m in kept], dtype=torch.bool))


def encoded_offsets(vocab: CharVocab, text: str, offsets: list[int]) -> list[int]:
    """Character offsets of `text` as offsets of its encoding (`encode` skips characters outside
    the vocabulary): where each conversation begins once encoded."""
    index, kept, out, at = vocab.index, 0, [], 0
    if set(text) <= index.keys():
        return list(offsets)
    for offset in offsets:
        kept += sum(1 for ch in text[at:offset] if ch in index)
        out.append(kept)
        at = offset
    return out


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D id stream into `batch_size` contiguous streams: (batch, length).

    Row b continues where it left off from one batch to the next, so the LSTM state carried
    across batches is the state of the text that precedes it (word_language_model's batchify,
    d2l's sequential partitioning).
    """
    length = ids.numel() // batch_size
    if length < 2:
        raise DataError(f"The text ({ids.numel()} characters) is too short for --batch-size {batch_size}; lower it.")
    return ids[: length * batch_size].view(batch_size, length)


def conversation_spans(starts: list[int], length: int, limit: int | None = None) -> list[tuple[int, int]]:
    """(begin, end) of each conversation (the first `limit`) of a text of `length` ids whose
    conversations begin at `starts`; conversations of fewer than two characters left out."""
    spans = list(zip(starts, list(starts[1:]) + [length]))[:limit]
    return [(a, b) for a, b in spans if b - a > 1]


CONVERSATION_ALIGN = 32  # a conversation begins at a multiple of this many characters of its row


def conversation_streams(ids: torch.Tensor, starts: list[int], batch_size: int, seq_len: int,
                         mask: torch.Tensor | None = None, seed: int | None = None,
                         align: int = CONVERSATION_ALIGN):
    """A chat dataset as `batch_size` streams in which every conversation's beginning is marked, so
    that training can start each one from a fresh state, as a new chat session does.

    The conversations (shuffled by `seed`, if given) go one after another to the shortest row, each
    padded to a multiple of `align` characters (at most `seq_len`), so that a BPTT window is read in
    a few stretches between beginnings. Returns (streams, targets, begins), each (batch, W *
    seq_len + 1): the ids; True where a character counts as a target (`mask`'s characters, or all;
    never padding nor a conversation's first character, which nothing predicts in a chat); True
    where a conversation begins (its row's state is zeroed before that character is read).
    """
    spans = conversation_spans(starts, ids.numel())
    if not spans:
        raise DataError("The chat dataset has no conversation of two characters or more; give a longer one.")
    align = max(1, min(align, seq_len))
    order = range(len(spans))
    if seed is not None:
        order = torch.randperm(len(spans), generator=torch.Generator().manual_seed(seed)).tolist()
    heap, rows = [(0, r) for r in range(batch_size)], [[] for _ in range(batch_size)]
    for j in order:
        a, b = spans[j]
        filled, r = heapq.heappop(heap)
        rows[r].append((filled, a, b))
        heapq.heappush(heap, (filled + -(-(b - a) // align) * align, r))
    windows = -(-max(filled for filled, _ in heap) // seq_len)
    streams = torch.zeros(batch_size, windows * seq_len + 1, dtype=torch.long)
    targets = torch.zeros(batch_size, windows * seq_len + 1, dtype=torch.bool)
    begins = torch.zeros(batch_size, windows * seq_len + 1, dtype=torch.bool)
    for r, row in enumerate(rows):
        for at, a, b in row:
            streams[r, at : at + b - a] = ids[a:b]
            targets[r, at + 1 : at + b - a] = True if mask is None else mask[a + 1 : b]
            begins[r, at] = True
    return streams, targets, begins


def num_batches(streams: torch.Tensor, seq_len: int) -> int:
    return (streams.shape[1] - 1 + seq_len - 1) // seq_len


def get_batch(streams: torch.Tensor, index: int, seq_len: int):
    """Inputs and targets of batch `index`: (batch, <=seq_len) each, targets shifted by one."""
    i = index * seq_len
    n = min(seq_len, streams.shape[1] - 1 - i)
    return streams[:, i : i + n], streams[:, i + 1 : i + 1 + n]


class StreamBatches:
    """Contiguous BPTT batches from a StreamingCorpus without holding the corpus in memory.

    Each of the `batch_size` rows reads its own contiguous share of the stream through its own
    iterator, so memory holds one chunk per row.
    """

    def __init__(self, corpus: StreamingCorpus, split: str, batch_size: int, seq_len: int, rank: int = 0, world: int = 1):
        self.corpus, self.split, self.seq_len = corpus, split, seq_len
        total = corpus.length(split)
        rows = batch_size * world
        self.row_len = total // rows
        if self.row_len < 2:
            raise DataError(f"The {split} text is too short for --batch-size {batch_size}; lower it.")
        self.starts = [(rank * batch_size + b) * self.row_len for b in range(batch_size)]
        self.vocab = corpus.vocab()

    def __len__(self) -> int:
        return (self.row_len - 1 + self.seq_len - 1) // self.seq_len

    def iterate(self, start_batch: int = 0):
        """Yield (index, inputs, targets) from batch `start_batch` on."""
        offset = start_batch * self.seq_len
        readers = [self._row_reader(s + offset, s + self.row_len) for s in self.starts]
        buffers = [""] * len(readers)
        for index in range(start_batch, len(self)):
            need = min(self.seq_len + 1, self.row_len - index * self.seq_len)
            rows = []
            for b, reader in enumerate(readers):
                while len(buffers[b]) < need:
                    piece = next(reader, None)
                    if piece is None:
                        break
                    buffers[b] += piece
                rows.append(self.vocab.encode(buffers[b][:need]))
                buffers[b] = buffers[b][need - 1:]
            n = min(len(r) for r in rows)
            if n < 2:
                return
            t = torch.tensor([r[:n] for r in rows], dtype=torch.long)
            yield index, t[:, :-1], t[:, 1:]

    def _row_reader(self, start, end):
        return iter(self.corpus.chars(self.split, start, end))
