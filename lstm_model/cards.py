"""Model cards: the README.md of a model folder or Hub repo, with the Hub's metadata (library,
license, language, datasets, tags, and `model-index` with the validation loss) and the project's
text (architecture, data, training command, metrics, a sample, limits).

`write_model_card` is what training writes; `model_card(model)` is what `save_pretrained` and
`push_to_hub` write for a model that has no card yet; `refresh_metadata(folder)` rewrites the
metadata of an existing card from its own Metrics section (used for the bundled models).
"""

from __future__ import annotations

import json
import os
import re

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .checkpoint import atomic_path
from .sources import is_local, repo_id_form

LIBRARY_NAME = "lstm-memory-chat"
# The project's tags and the ones PyTorchModelHubMixin adds to every card it makes.
TAGS = ["lstm", "char-level", "text-generation", "lstm-memory-chat", "model_hub_mixin", "pytorch_model_hub_mixin"]
NATS_KEY, BITS_KEY = "validation loss (nats/char)", "validation loss (bits/char)"
# Where the validation loss is found in a metrics dict, best first: the bundled cards' wording, then
# training's whole-split figure (val_loss_full), then its estimate over a few batches.
NATS_KEYS, BITS_KEYS = (NATS_KEY, "val_loss_full", "val_loss"), (BITS_KEY, "val_bpc_full", "val_bpc")
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")  # ISO 639-1/-3 with an optional region: en, pt-BR
MAX_CARD_CHARS = 10_000_000  # a card is read whole; a README.md longer than this is no model card


class CardError(ValueError):
    """A model card that cannot be read or written; one sentence saying why and what to do."""


def _first(metrics: dict, keys) -> float | None:
    return next((float(metrics[k]) for k in keys if isinstance(metrics.get(k), (int, float))), None)
LIMITS_TEXT = (
    "A teaching and exploration model: it shows what an LSTM's memory holds while you chat with it. "
    "It imitates the surface of its corpus one character at a time; it has no knowledge, "
    "makes things up, and should not be used for anything that needs facts."
)


def is_hub_dataset(dataset: str | None) -> bool:
    return bool(dataset) and not is_local(dataset) and repo_id_form(dataset)


# The recurrent layers as a card names them, by the model's `cell` (this module cannot import
# model.py, which imports it).
CELL_WORDS = {"lstm": ("LSTM", "nn.LSTM"), "gru": ("GRU", "nn.GRU"), "rnn": ("RNN", "nn.RNN, tanh")}


def card_data(*, name: str, dataset: str | None = None, metrics: dict | None = None,
              language: str | None = "en", cell: str = "lstm") -> ModelCardData:
    """The card's metadata. With a validation loss in `metrics`, `model-index` reports it (nats
    and bits per character on the validation split) so that the Hub shows it as an evaluation.
    A GRU's or RNN's card is tagged with its cell ("gru", "rnn") where an LSTM's says "lstm"."""
    nats, bits = _first(metrics or {}, NATS_KEYS), _first(metrics or {}, BITS_KEYS)
    results = []
    if dataset and nats is not None:
        dataset_type = dataset if is_hub_dataset(dataset) else os.path.splitext(os.path.basename(dataset.rstrip("/")))[0]
        common = dict(task_type="text-generation", task_name="Character-level language modelling",
                      dataset_type=dataset_type, dataset_name=dataset_type, dataset_split="validation")
        results.append(EvalResult(**common, metric_type="loss", metric_name=NATS_KEY, metric_value=round(nats, 4)))
        if bits is not None:
            results.append(EvalResult(**common, metric_type="bpc", metric_name=BITS_KEY, metric_value=round(bits, 4)))
    return ModelCardData(
        language=language or None, license="mit", library_name=LIBRARY_NAME,
        tags=[cell if tag == "lstm" and cell in CELL_WORDS else tag for tag in TAGS],
        pipeline_tag="text-generation", datasets=[dataset] if is_hub_dataset(dataset) else None,
        model_name=name if results else None, eval_results=results or None,
    )


def _cell_words(model) -> tuple[str, str]:
    return CELL_WORDS.get(getattr(model, "cell", "lstm"), CELL_WORDS["lstm"])


def _model_lines(model) -> list[str]:
    cfg = model.config
    return [
        "## Model", "",
        f"- vocabulary: {len(cfg['vocab'])} characters; embedding {cfg['embed_dim']}, "
        f"{cfg['num_layers']} {_cell_words(model)[0]} layers of {cfg['hidden_size']} units, dropout {cfg['dropout']}",
        f"- parameters: {model.num_parameters():,}",
        f"- chat turn separator {cfg['turn_separator']!r}, stop sequence {cfg['stop_sequence']!r}", "",
    ]


PROJECT = "LSTM Memory Chat"
_PROJECT_MENTION = re.compile(r"made with (\[LSTM Memory Chat\]\([^)\s]*\)|LSTM Memory Chat)")


def project_link(project_url: str | None) -> str:
    """The project's name, linked only to a URL the publisher gives (the card names no address
    that the publisher has not checked)."""
    return f"[{PROJECT}]({project_url})" if project_url else PROJECT


def _intro(title: str, project_url: str | None = None, model=None) -> list[str]:
    name, module = _cell_words(model)
    return [
        f"# {title}", "",
        f"A character-level {name} language model (embedding -> {module} -> linear head) made with "
        f"{project_link(project_url)}. Load it with `lstm_model.load_model(\"<folder or user/name>\")` or "
        "`CharLSTM.from_pretrained(...)`, or chat with it: `python app.py --model <folder or user/name>`.", "",
    ]


def _compose(data: ModelCardData, body: list[str]) -> ModelCard:
    return ModelCard("\n".join(["---", data.to_yaml(), "---", "", *body]).rstrip("\n") + "\n")


def model_card(model, language: str | None = "en") -> ModelCard:
    """The card of a model known only by its weights (no dataset or metrics)."""
    return _compose(card_data(name="char-lstm", language=language, cell=getattr(model, "cell", "lstm")),
                    [*_intro("CharLSTM", model=model), *_model_lines(model), "## Intended use and limits", "", LIMITS_TEXT, ""])


def write_model_card(folder: str | os.PathLike, *, model, dataset: str, split: str, train_config: dict,
                     metrics: dict, sample: str, command: str = "", extra: str = "", language: str | None = "en",
                     project_url: str | None = None) -> None:
    """Write README.md (a Hub model card with metadata) into a model folder; `project_url`, where
    given, links the project's name."""
    name = os.path.basename(dataset.rstrip("/")) or dataset
    body = [*_intro(f"CharLSTM trained on {name}", project_url, model), *_model_lines(model), "## Data", "",
            f"- dataset: `{dataset}`" + (f" (revision `{train_config.get('revision')}`)" if train_config.get("revision") else ""),
            f"- validation: {split}", "", "## Training", ""]
    if command:
        body += ["```", command, "```", ""]
    body += ["```json", json.dumps(train_config, indent=2, sort_keys=True), "```", "", "## Metrics", ""]
    for key, value in metrics.items():
        body.append(f"- {key}: {value:.4f}" if isinstance(value, float) else f"- {key}: {value}")
    body += ["", "## Sample", "", "```", sample, "```", ""]
    if extra:
        body += [extra, ""]
    body += ["## Intended use and limits", "", LIMITS_TEXT, ""]
    data = card_data(name=f"char-lstm-{re.sub(r'[^a-z0-9]+', '-', os.path.splitext(name)[0].lower()).strip('-')}",
                     dataset=dataset, metrics=metrics, language=language, cell=getattr(model, "cell", "lstm"))
    save_card(_compose(data, body), os.path.join(folder, "README.md"))


def save_card(card: ModelCard, path: str) -> None:
    """Write a card to a temporary file beside `path`, then rename it: a README.md is never half written."""
    tmp = atomic_path(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(str(card))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _folder_cell(folder) -> str:
    """The cell a model folder's config.json names ("lstm" where it names none or cannot be read:
    the card's tags are all that depends on it)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            cell = json.load(f).get("cell", "lstm")
        return cell if isinstance(cell, str) and cell in CELL_WORDS else "lstm"
    except (OSError, ValueError, AttributeError):
        return "lstm"


def read_metrics(card_text: str) -> dict:
    """The `- name: number` lines of a card's Metrics section."""
    section = card_text.split("## Metrics", 1)[1].split("\n## ", 1)[0] if "## Metrics" in card_text else ""
    metrics = {}
    for key, value in re.findall(r"^- (.+?): ([-+0-9.eE]+)\s*$", section, flags=re.M):
        metrics[key] = float(value)
    return metrics


def refresh_metadata(folder: str | os.PathLike, dataset: str | None = None, language: str | None = "en",
                     project_url: str | None = None) -> ModelCard:
    """Rewrite the metadata of the card in `folder` (its text kept) from its Metrics section and
    the dataset it names (or `dataset`); with `project_url`, the project's name in the text links
    there. CardError with one sentence if the card cannot be read or
    written; the card is then left as it was."""
    path = os.path.join(folder, "README.md")
    try:  # read here, not with ModelCard.load, which takes a path that is not a file for a Hub repo id
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read(MAX_CARD_CHARS + 1)
    except (OSError, UnicodeDecodeError) as err:
        raise CardError(f"Cannot read the model card {path} ({getattr(err, 'strerror', None) or err}); give the "
                        "folder of a model that training wrote.") from None
    if len(text) > MAX_CARD_CHARS:
        raise CardError(f"{path} is over {MAX_CARD_CHARS:,} characters, too long for a model card; give the folder "
                        "of a model that training wrote.")
    try:
        card = ModelCard(text)
    except (ValueError, yaml.YAMLError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CardError(f"{path} has a metadata block this cannot read ({reason}); fix or delete the block between "
                        "its --- lines, then run this again.") from None
    if dataset is None:
        named = re.search(r"^- dataset: `([^`]+)`", card.text, flags=re.M)
        dataset = named.group(1) if named else None
    name = os.path.basename(os.path.abspath(folder))
    text = card.text
    if project_url:
        text = _PROJECT_MENTION.sub(lambda m: f"made with {project_link(project_url)}", text, count=1)
    card = _compose(card_data(name=f"char-lstm-{name}", dataset=dataset, metrics=read_metrics(text), language=language,
                              cell=_folder_cell(folder)), text.lstrip("\n").splitlines())
    try:
        save_card(card, path)
    except OSError as err:
        raise CardError(f"Cannot write {path} ({err.strerror or err}); it was left as it was: make the folder "
                        "writable and run this again.") from None
    return card
