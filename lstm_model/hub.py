"""Models on disk and on the Hub: `load_model(source)` (a local folder, a Hub repo id
user/name[@revision], a bundled model's name, or the bundled default), `load_int8_check`, model
cards, and pushing a trained folder to the Hub."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .data import hub_reachable
from .model import CONFIG_NAME, WEIGHTS_NAME, CharLSTM, CheckpointError, check_config, require_safetensors

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = "shakespeare"
INT8_CHECK_FILE = "int8.json"  # the measured loss of int8 steps (lstm_model.evaluate.check_int8)


class ModelLoadError(ValueError):
    """A model that cannot be loaded; one sentence saying why and what to do."""


def bundled_models() -> dict[str, Path]:
    """The models shipped in assets/, by folder name."""
    if not ASSETS.is_dir():
        return {}
    return {p.name: p for p in sorted(ASSETS.iterdir()) if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file()}


def default_model_path() -> Path:
    models = bundled_models()
    if DEFAULT_MODEL in models:
        return models[DEFAULT_MODEL]
    if models:
        return next(iter(models.values()))
    raise ModelLoadError("No bundled model was found in assets/; train one with `python -m lstm_model.train` and pass --model.")


def parse_source(source: str) -> tuple[str, str | None]:
    """'user/name@revision' -> ('user/name', 'revision'); a local path is returned unchanged."""
    if os.path.exists(source):
        return source, None
    if "@" in source:
        repo, _, revision = source.partition("@")
        return repo, revision or None
    return source, None


def validate_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    if repo_id.count("/") != 1:
        raise ModelLoadError(f"'{repo_id}' is neither a local folder nor a Hub repo id of the form user/name[@revision].")
    try:
        hf_validate(repo_id)
    except HFValidationError:
        raise ModelLoadError(f"'{repo_id}' is not a valid Hub repo id; use user/name with letters, digits, '-', '_' or '.'.") from None


def _check_local_folder(folder: str) -> None:
    try:
        require_safetensors(folder)
    except CheckpointError as err:
        raise ModelLoadError(str(err)) from None
    if CONFIG_NAME not in os.listdir(folder):
        raise ModelLoadError(f"{folder} has no {CONFIG_NAME}; point --model at a folder written by save_pretrained().")
    try:
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{folder}/{CONFIG_NAME} is not valid JSON ({err}); re-save the model.") from None
    try:
        check_config(config)
    except CheckpointError as err:
        raise ModelLoadError(str(err)) from None


def resolve_source(source: str | os.PathLike | None) -> tuple[str, str | None]:
    """(local folder or repo id, revision) for a model source: a bundled model's name, a local
    folder, `user/name[@revision]`, or None for the bundled default."""
    if source is None:
        return str(default_model_path()), None
    source = str(source).strip()
    if source in bundled_models():
        source = str(bundled_models()[source])
    return parse_source(source)


def source_key(source: str | os.PathLike | None) -> str:
    """One name for every spelling of a source: a local folder's real path (a bundled name and
    None resolved first), else `repo@commit`, the commit that the revision (default `main`) points
    to, found by fetching the repo's config.json (from the local cache when the Hub is out of
    reach); `repo@revision` when even that fails (loading will then say why)."""
    path, revision = resolve_source(source)
    if os.path.exists(path):
        return os.path.realpath(path)
    try:
        validate_repo_id(path)
        from huggingface_hub import hf_hub_download

        config = hf_hub_download(path, CONFIG_NAME, revision=revision, local_files_only=not hub_reachable())
        return f"{path}@{os.path.basename(os.path.dirname(config))}"  # .../snapshots/<commit>/config.json
    except Exception:  # noqa: BLE001 - any failure: the plain key, and load_model's sentence
        return f"{path}@{revision or 'main'}"


def load_model(source: str | os.PathLike | None = None, device: str = "cpu") -> CharLSTM:
    """Load a CharLSTM for inference (eval mode).

    `source` is a local folder, a Hub repo id `user/name` or `user/name@revision`, a bundled
    model's name, or None for the bundled default model (assets/shakespeare). Only config.json and
    model.safetensors are read; `load_int8_check` reads the folder's int8.json.
    """
    path, revision = resolve_source(source)
    if os.path.isdir(path):
        _check_local_folder(path)
    elif os.path.exists(path):
        raise ModelLoadError(f"{path} is a file; give the folder that holds config.json and {WEIGHTS_NAME}.")
    else:
        validate_repo_id(path)
    # Offline, only the local cache can help: ask for it alone instead of retrying the network.
    local_only = not os.path.isdir(path) and not hub_reachable()
    try:
        model = CharLSTM.from_pretrained(path, revision=revision, map_location=device, local_files_only=local_only)
    except (CheckpointError, ModelLoadError) as err:
        raise ModelLoadError(str(err)) from None
    except Exception as err:
        raise ModelLoadError(_hub_error_sentence(path, revision, err)) from None
    return model


def load_int8_check(source: str | os.PathLike | None = None) -> dict | None:
    """The int8 check (int8.json: the loss of fp32 and int8 steps on held-out text) of a model
    folder or Hub repo, or None when it has none or it cannot be read as one. lstm_model.serving
    decides from it whether int8 steps may serve the model."""
    try:
        path, revision = resolve_source(source)
        if os.path.isdir(path):
            file = os.path.join(path, INT8_CHECK_FILE)
        else:
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(path, INT8_CHECK_FILE, revision=revision, local_files_only=not hub_reachable())
        with open(file, encoding="utf-8") as f:
            check = json.load(f)
        rise = float(check["loss_rise"])
    except Exception:  # the check is optional: a model without one serves fp32 steps
        return None
    return check if math.isfinite(rise) else None


def _hub_error_sentence(repo_id: str, revision: str | None, err: Exception) -> str:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"'{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError)):
        return (
            f"Could not reach the Hugging Face Hub to download {where}, and it is not in the local cache; "
            "connect to the internet or give a local folder."
        )
    if isinstance(err, GatedRepoError):
        return f"The model repo {where} is gated; accept its terms on the Hub and log in with `hf auth login`."
    if isinstance(err, RepositoryNotFoundError):
        return f"The model repo {where} was not found on the Hub (or is private); check the id or log in with `hf auth login`."
    if isinstance(err, RevisionNotFoundError):
        return f"The model repo '{repo_id}' has no revision '{revision}'; check the branch, tag or commit."
    if isinstance(err, EntryNotFoundError):  # after LocalEntryNotFoundError, its subclass
        return f"The model repo {where} has no {WEIGHTS_NAME}; only safetensors CharLSTM checkpoints can be loaded."
    return f"Could not load the model {where} ({type(err).__name__}: {err}); check the id or give a local folder."


# -- model cards and pushing ------------------------------------------------------------------


def write_model_card(folder: str | os.PathLike, *, model: CharLSTM, dataset: str, split: str, train_config: dict,
                     metrics: dict, sample: str, command: str = "", extra: str = "") -> None:
    """Write README.md (a Hub model card with metadata) into a model folder."""
    from huggingface_hub import ModelCard, ModelCardData

    is_hub_dataset = not os.path.exists(dataset) and dataset.count("/") == 1
    data = ModelCardData(
        library_name="lstm-memory-chat",
        license="mit",
        tags=["lstm", "char-level", "text-generation", "lstm-memory-chat"],
        pipeline_tag="text-generation",
        datasets=[dataset] if is_hub_dataset else None,
    )
    cfg = model.config
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# CharLSTM trained on {os.path.basename(dataset.rstrip('/')) or dataset}", "",
        "A character-level LSTM language model (embedding -> nn.LSTM -> linear head) made with "
        "[LSTM Memory Chat](" + "https://github.com/lstm-memory-chat/lstm-memory-chat" + "). "
        "Load it with `lstm_model.load_model(\"<folder or user/name>\")` or `CharLSTM.from_pretrained(...)`.", "",
        "## Model", "",
        f"- vocabulary: {len(cfg['vocab'])} characters; embedding {cfg['embed_dim']}, "
        f"{cfg['num_layers']} LSTM layers of {cfg['hidden_size']} units, dropout {cfg['dropout']}",
        f"- parameters: {model.num_parameters():,}",
        f"- chat turn separator {cfg['turn_separator']!r}, stop sequence {cfg['stop_sequence']!r}", "",
        "## Data", "",
        f"- dataset: `{dataset}`" + (f" (revision `{train_config.get('revision')}`)" if train_config.get("revision") else ""),
        f"- validation: {split}", "",
        "## Training", "",
    ]
    if command:
        lines += ["```", command, "```", ""]
    lines += ["```json", json.dumps(train_config, indent=2, sort_keys=True), "```", "", "## Metrics", ""]
    for key, value in metrics.items():
        lines.append(f"- {key}: {value:.4f}" if isinstance(value, float) else f"- {key}: {value}")
    lines += ["", "## Sample", "", "```", sample, "```", ""]
    if extra:
        lines += [extra, ""]
    lines += [
        "## Intended use and limits", "",
        "A teaching and exploration model: it shows what an LSTM's memory holds while you chat with it. "
        "It imitates the surface of its corpus one character at a time; it has no knowledge, "
        "makes things up, and should not be used for anything that needs facts.", "",
    ]
    ModelCard("\n".join(lines)).save(os.path.join(folder, "README.md"))


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model folder (config.json, model.safetensors, README.md, metrics) to the Hub.

    Uses the usual token sources (HF_TOKEN, `hf auth login`). Returns the repo URL; raises
    ModelLoadError with one sentence on failure (the local folder is untouched).
    """
    from huggingface_hub import HfApi

    validate_repo_id(repo_id)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model",
            allow_patterns=["config.json", WEIGHTS_NAME, "README.md", "metrics.jsonl", "loss_curve.png", "train_config.json"],
            commit_message="Upload CharLSTM trained with LSTM Memory Chat",
        )
    except Exception as err:
        raise ModelLoadError(
            f"Could not push {folder} to the Hub repo '{repo_id}' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "the local checkpoint is kept: check your token (`hf auth login` or HF_TOKEN) and network, then run "
            f"`hf upload {repo_id} {folder}`."
        ) from None
    return str(url)
