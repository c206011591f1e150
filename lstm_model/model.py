"""CharLSTM: character embedding -> recurrent layers -> Linear, saved as config.json + model.safetensors.

The recurrent layers are the config's `cell`: nn.LSTM ("lstm", the default and what a config.json
without the key holds), nn.GRU ("gru") or nn.RNN with tanh ("rnn"), so that the same chat, views
and serving compare a gated long-term memory with a gated and a plain short-term one.

The embedding is the tutorial's one-hot input factored through a learned table (ARCHITECTURE.md, "The model"):
a one-hot vector times W_x* only selects a row, so this is the same model family without ever
building a dense one-hot tensor.

The state is always the pair (h, c), each (num_layers, batch, units): for a GRU or a plain RNN,
which carry H alone, c has zero units, (num_layers, batch, 0). Everything that carries, gathers,
snapshots or measures a state then handles every cell alike (rows are gathered along dimension 1
either way); only the step engines and the traces look inside.
"""

from __future__ import annotations

import math
import os

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from torch import nn

from . import cards
from .vocab import NORMALIZATIONS, CharVocab, VocabError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Limits checked before any memory is allocated: a config beyond these is refused.
LIMITS = {"vocab": 100_000, "embed_dim": 8192, "hidden_size": 8192, "num_layers": 16}
MAX_PARAMETERS = 500_000_000

# The recurrent cells a model may name, and how many blocks of `hidden_size` rows each packs into
# weight_ih_l{k} / weight_hh_l{k} and the biases (PyTorch's orders: LSTM input, forget, cell,
# output; GRU reset, update, new; RNN one).
CELLS = ("lstm", "gru", "rnn")
GATE_BLOCKS = {"lstm": 4, "gru": 3, "rnn": 1}


def has_cell_state(cell: str) -> bool:
    """Whether the cell carries a cell state C beside H (only the LSTM does)."""
    return cell == "lstm"


def recurrent_module(cell: str, embed_dim: int, hidden_size: int, num_layers: int, dropout: float) -> nn.Module:
    """The cell's torch module, batch first, with dropout between layers."""
    options = dict(num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0, batch_first=True)
    if cell == "lstm":
        return nn.LSTM(embed_dim, hidden_size, **options)
    if cell == "gru":
        return nn.GRU(embed_dim, hidden_size, **options)
    if cell == "rnn":
        return nn.RNN(embed_dim, hidden_size, nonlinearity="tanh", **options)
    raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}.")


def paired(run, cell: str):
    """`run(x, hx)` of a cell's module as a function of the pair: (x, (h, c)) -> (out, (h, c)).
    nn.GRU and nn.RNN take and return H alone; their c (zero units) is passed through."""
    if has_cell_state(cell):
        return run

    def read(x, state):
        out, h = run(x, state[0])
        return out, (h, state[1])

    return read


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


def check_config(config: dict) -> None:
    """Refuse a config with absurd or malformed values before anything is allocated."""
    if not isinstance(config, dict):
        raise CheckpointError("config.json must hold a JSON object; re-save the model with save_pretrained().")
    vocab = config.get("vocab")
    if not isinstance(vocab, list) or not vocab:
        raise CheckpointError("config.json has no 'vocab' list of characters; this is not a CharLSTM checkpoint.")
    if len(vocab) > LIMITS["vocab"]:
        raise CheckpointError(f"config.json lists {len(vocab)} characters, over the limit of {LIMITS['vocab']}.")
    try:
        CharVocab(vocab)
    except VocabError as err:
        raise CheckpointError(f"config.json has a bad vocabulary: {err}") from None
    for key in ("embed_dim", "hidden_size", "num_layers"):
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMITS[key]:
            raise CheckpointError(f"config.json has {key}={value!r}; it must be an integer from 1 to {LIMITS[key]}.")
    dropout = config.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise CheckpointError(f"config.json has dropout={dropout!r}; it must be a number in [0, 1).")
    if config.get("cell", "lstm") not in CELLS:
        raise CheckpointError(f"config.json has cell={config.get('cell')!r}; it must be one of "
                              f"{', '.join(map(repr, CELLS))}.")
    for key in ("turn_separator", "stop_sequence"):
        if not isinstance(config.get(key, ""), str):
            raise CheckpointError(f"config.json has a non-string {key}; it must be a string.")
    if config.get("normalize", "") not in NORMALIZATIONS:
        raise CheckpointError(f"config.json has normalize={config.get('normalize')!r}; it must be one of "
                              f"{', '.join(map(repr, NORMALIZATIONS))}.")
    n = parameter_count(len(vocab), config.get("embed_dim", 64), config.get("hidden_size", 512), config.get("num_layers", 2),
                        config.get("cell", "lstm"))
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"config.json describes a model of {n:,} parameters, over the limit of {MAX_PARAMETERS:,}.")


def require_safetensors(folder: str) -> None:
    """A local model folder must hold model.safetensors; pickle weights are refused unopened."""
    names = os.listdir(folder)
    if WEIGHTS_NAME in names:
        return
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise CheckpointError(f"{folder} holds only pickle weights ({pickles[0]}), which can run code when loaded; "
                              f"only {WEIGHTS_NAME} is accepted: convert them with a trusted copy of the code.")
    raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}; point --model at a folder written by save_pretrained().")


def parameter_count(vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int, cell: str = "lstm") -> int:
    recurrent = 0
    for layer in range(num_layers):
        inputs = embed_dim if layer == 0 else hidden_size
        recurrent += GATE_BLOCKS[cell] * hidden_size * (inputs + hidden_size + 2)
    return vocab_size * embed_dim + recurrent + hidden_size * vocab_size + vocab_size


def read_with_starts(lstm, x: torch.Tensor, state, starts: torch.Tensor | None):
    """`lstm(x, state)` for x (batch, time, features) and the pair (h, c) (`paired` makes such a
    function of a GRU or RNN module); with `starts` (batch, time, bool), each row's
    state is set to zeros before the positions it marks (a new conversation begins there, as a new
    chat session starts from `begin_state`): one call per stretch between such positions, the
    gradient flowing through all of them."""
    if starts is None:
        return lstm(x, state)
    cuts = starts.any(0).nonzero().flatten().tolist()
    if not cuts or cuts[0] != 0:
        cuts = [0] + cuts
    outs = []
    for a, b in zip(cuts, cuts[1:] + [x.shape[1]]):
        keep = (~starts[:, a]).to(x.dtype)[None, :, None]
        out, state = lstm(x[:, a:b], (state[0] * keep, state[1] * keep))
        outs.append(out)
    return torch.cat(outs, dim=1), state


class CharLSTM(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="lstm-memory-chat",
    tags=["lstm", "char-level", "text-generation", "lstm-memory-chat"],
    pipeline_tag="text-generation",
    license="mit",
):
    """A character-level recurrent language model: an LSTM, or with `cell` a GRU or a plain RNN.

    Arguments are plain JSON values so that `save_pretrained` writes them to config.json:
    `vocab` (list of characters), `embed_dim`, `hidden_size`, `num_layers`, `dropout`, `cell`
    ("lstm", "gru" or "rnn": the recurrent module, held as the attribute of that name, `lstm`,
    `gru` or `rnn`, and reached whatever the cell as `recurrent`), and the chat metadata:
    `turn_separator` (appended to each user message), `stop_sequence` (ends a reply) and
    `normalize` (how a user's message is read: vocab.normalize; "" as typed). `forget_bias` is the
    initial bias of the LSTM's forget gate (only used at initialisation; other cells have none).
    The class keeps its first name for every cell: every saved model, whatever its cell, loads
    with `CharLSTM.from_pretrained`.
    """

    def __init__(
        self,
        vocab: list[str],
        embed_dim: int = 64,
        hidden_size: int = 512,
        num_layers: int = 2,
        dropout: float = 0.2,
        turn_separator: str = "\n\n",
        stop_sequence: str = "\n\n",
        forget_bias: float = 1.0,
        normalize: str = "",
        cell: str = "lstm",
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}.")
        self.cell = cell
        self.vocab = CharVocab(vocab)
        self.embed_dim = embed_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout_p = dropout
        self.turn_separator = turn_separator
        self.stop_sequence = stop_sequence
        self.normalize = normalize
        self.embedding = nn.Embedding(len(self.vocab), embed_dim)
        # Registered under the cell's name, so that the weights are saved as lstm.*, gru.* or rnn.*:
        # a checkpoint says what it holds, and one cell's tensors never load into another's.
        setattr(self, cell, recurrent_module(cell, embed_dim, hidden_size, num_layers, dropout))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, len(self.vocab))
        self._init_weights(forget_bias)

    def _init_weights(self, forget_bias: float) -> None:
        nn.init.normal_(self.embedding.weight, std=1.0 / math.sqrt(self.embed_dim))
        if not has_cell_state(self.cell):  # only the LSTM has a forget gate
            return
        h = self.hidden_size
        for layer in range(self.num_layers):
            # PyTorch packs the gates as input, forget, cell, output; both biases are added.
            getattr(self.lstm, f"bias_ih_l{layer}").data[h : 2 * h].fill_(forget_bias / 2)
            getattr(self.lstm, f"bias_hh_l{layer}").data[h : 2 * h].fill_(forget_bias / 2)

    @property
    def recurrent(self) -> nn.Module:
        """The recurrent module, whatever the cell: nn.LSTM, nn.GRU or nn.RNN."""
        return getattr(self, self.cell)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def config(self) -> dict:
        return {
            "vocab": list(self.vocab.chars),
            "embed_dim": self.embed_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout_p,
            "turn_separator": self.turn_separator,
            "stop_sequence": self.stop_sequence,
            "cell": self.cell,
            **({"normalize": self.normalize} if self.normalize else {}),  # older configs have no such key
        }

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def begin_state(self, batch_size: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The zero (h, c) pair: h (num_layers, batch, hidden); c the same for an LSTM, and
        (num_layers, batch, 0) for a GRU or RNN, which have no cell state."""
        if device is None:
            device = self.head.weight.device
        shape = (self.num_layers, batch_size, self.hidden_size)
        c_units = self.hidden_size if has_cell_state(self.cell) else 0
        return torch.zeros(shape, device=device), torch.zeros(shape[:2] + (c_units,), device=device)

    def forward(self, ids: torch.Tensor, state=None, starts: torch.Tensor | None = None):
        """ids (batch, time) -> logits (batch, time, vocab), and the new (h, c). `starts` (batch,
        time, bool), if given, marks where a conversation begins: that row's state is zeroed
        before it reads that position (training on a chat dataset, `read_with_starts`)."""
        if state is None:
            state = self.begin_state(ids.shape[0], ids.device)
        x = self.drop(self.embedding(ids))
        out, state = read_with_starts(paired(self.recurrent, self.cell), x, state, starts)
        return self.head(self.drop(out)), state

    def logits_from_state(self, state) -> torch.Tensor:
        """The next-character logits that a state predicts: head(H of the top layer), (batch, vocab)."""
        return self.head(state[0][-1])

    # -- Hub loading: safetensors + JSON only, validated before allocation -----------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision=None, cache_dir=None, force_download=False,
                        local_files_only=False, token=None, **model_kwargs):
        """Load from a local folder or a Hub repo id. For a repo id, config.json and
        model.safetensors are downloaded first, from one commit, so that a missing repo, revision,
        gated repo or missing file raises the Hub's own error (RepositoryNotFoundError,
        RevisionNotFoundError, GatedRepoError, EntryNotFoundError: `hub.load_model` turns them
        into sentences) instead of the mixin's "no config" fallback; then the snapshot folder is
        loaded like a local one."""
        source = str(pretrained_model_name_or_path)
        if not os.path.isdir(source):
            source = download_checkpoint(source, revision=revision, cache_dir=cache_dir, force_download=force_download,
                                         local_files_only=local_files_only, token=token)
        return super().from_pretrained(source, **model_kwargs)

    def generate_model_card(self, *args, **kwargs):
        """The card `save_pretrained` and `push_to_hub` write when the folder has none: the
        project's card (architecture, how to load it, limits), not the mixin's generic one."""
        return cards.model_card(self)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision,
        cache_dir,
        force_download: bool,
        local_files_only: bool,
        token,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        check_config(model_kwargs)
        require_safetensors(model_id)  # a folder: from_pretrained downloaded a repo's checkpoint first
        model_file = os.path.join(model_id, WEIGHTS_NAME)
        check_weight_file(model_file, model_kwargs)  # before anything is allocated
        known = {"vocab", "embed_dim", "hidden_size", "num_layers", "dropout", "turn_separator", "stop_sequence", "forget_bias",
                 "normalize", "cell"}
        model = cls(**{k: v for k, v in model_kwargs.items() if k in known})
        load_weights(model, model_file, map_location)
        model.eval()
        return model


def download_checkpoint(repo_id: str, revision: str | None = None, **download) -> str:
    """Download config.json, then model.safetensors from the same commit, into the Hub cache;
    returns the snapshot folder. The Hub's errors propagate (the config's first: a missing repo or
    revision is reported before anything large is fetched)."""
    config = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, **download)
    snapshot = os.path.dirname(config)  # .../snapshots/<commit>
    hf_hub_download(repo_id, WEIGHTS_NAME, revision=os.path.basename(snapshot), **download)
    return snapshot


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The tensors a checkpoint of this config holds, and their shapes (nothing allocated)."""
    vocab, hidden = len(config["vocab"]), config.get("hidden_size", 512)
    embed, layers = config.get("embed_dim", 64), config.get("num_layers", 2)
    cell = config.get("cell", "lstm")
    rows = GATE_BLOCKS[cell] * hidden
    shapes = {"embedding.weight": (vocab, embed), "head.weight": (vocab, hidden), "head.bias": (vocab,)}
    for k in range(layers):
        shapes[f"{cell}.weight_ih_l{k}"] = (rows, embed if k == 0 else hidden)
        shapes[f"{cell}.weight_hh_l{k}"] = (rows, hidden)
        shapes[f"{cell}.bias_ih_l{k}"] = shapes[f"{cell}.bias_hh_l{k}"] = (rows,)
    return shapes


def check_weight_file(model_file: str, config: dict) -> None:
    """The file's tensor names, shapes and dtypes against what `config` implies, from the
    safetensors header alone: a mismatch is refused before the model is allocated."""
    from safetensors import safe_open

    expected = expected_shapes(config)
    try:
        handle = safe_open(model_file, framework="pt")
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{os.path.basename(model_file)} is not a readable safetensors file ({err}); "
                              "re-save or re-download it.") from None
    with handle as f:
        names = set(f.keys())
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        if missing:
            raise CheckpointError(f"{WEIGHTS_NAME} lacks the tensors {missing[:3]}; it does not match config.json.")
        if extra:
            raise CheckpointError(f"{WEIGHTS_NAME} has unexpected tensors {extra[:3]}; it does not match config.json.")
        for name, want in expected.items():
            tensor = f.get_slice(name)
            shape = tuple(tensor.get_shape())
            if shape != want:
                raise CheckpointError(f"{WEIGHTS_NAME}: tensor {name} has shape {shape}, but config.json implies {want}.")
            if tensor.get_dtype() not in ("F32", "F16", "BF16", "F64"):
                raise CheckpointError(f"{WEIGHTS_NAME}: tensor {name} has dtype {tensor.get_dtype()}; "
                                      "weights must be floating point.")


def load_weights(model: CharLSTM, model_file: str, map_location="cpu") -> None:
    """Load a safetensors file that `check_weight_file` accepted into `model`, refusing NaN and
    infinite values."""
    from safetensors import safe_open

    loaded = {}
    with safe_open(model_file, framework="pt", device=str(map_location)) as f:
        for name, target in model.state_dict().items():
            tensor = f.get_tensor(name)
            if not torch.isfinite(tensor).all():
                raise CheckpointError(f"{WEIGHTS_NAME}: tensor {name} contains NaN or infinite values; the model is broken.")
            loaded[name] = tensor.to(target.dtype)
    model.load_state_dict(loaded, strict=True)
