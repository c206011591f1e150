"""Models on disk and on the Hub: `load_model(source)` (a local folder, a Hub repo id
user/name[@revision], a bundled model's name, or the bundled default), `load_int8_check`, the
Hub's failures as one sentence each, and pushing a trained folder to the Hub (`push_folder`).
Model cards are written by cards.py; the Space deploy and the publishing CLI are publish.py."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .cards import write_model_card  # noqa: F401 - hub.write_model_card, its former home
from .data import hub_offline, hub_reachable, hub_url
from .model import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CharLSTM,
    CheckpointError,
    check_config,
    download_checkpoint,
    require_safetensors,
)
from .sources import is_local

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


def parse_source(source: str, hub_only: bool = False) -> tuple[str, str | None]:
    """'user/name@revision' -> ('user/name', 'revision'); a local path is returned unchanged
    (unless `hub_only`: the source is a Hub repo id whatever the disk holds)."""
    if is_local(source, hub_only):
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


def _read_from_disk(path: str, source, hub_only: bool) -> bool:
    """Whether a resolved source's `path` is read from disk: a bundled name always is; with
    `hub_only`, nothing else."""
    return is_local(path, hub_only and source not in bundled_models())


def resolve_source(source: str | os.PathLike | None, hub_only: bool = False) -> tuple[str, str | None]:
    """(local folder or repo id, revision) for a model source: a bundled model's name, a local
    folder, `user/name[@revision]`, or None for the bundled default. With `hub_only`, a source
    that is not a bundled name is a Hub repo id, even where a local path of that name exists."""
    if source is None:
        return str(default_model_path()), None
    source = str(source).strip()
    if source in bundled_models():
        return parse_source(str(bundled_models()[source]))
    return parse_source(source, hub_only)


def source_key(source: str | os.PathLike | None, hub_only: bool = False) -> str:
    """One name for every spelling of a source: a local folder's real path (a bundled name and
    None resolved first), else `repo@commit`, the commit that the revision (default `main`) points
    to, found by fetching the repo's config.json (from the local cache when the Hub is out of
    reach); `repo@revision` when even that fails (loading will then say why)."""
    path, revision = resolve_source(source, hub_only)
    if _read_from_disk(path, source, hub_only):
        return os.path.realpath(path)
    try:
        validate_repo_id(path)
        from huggingface_hub import hf_hub_download

        config = hf_hub_download(path, CONFIG_NAME, revision=revision, local_files_only=not hub_reachable())
        return f"{path}@{os.path.basename(os.path.dirname(config))}"  # .../snapshots/<commit>/config.json
    except Exception:  # noqa: BLE001 - any failure: the plain key, and load_model's sentence
        return f"{path}@{revision or 'main'}"


def load_model(source: str | os.PathLike | None = None, device: str = "cpu", hub_only: bool = False) -> CharLSTM:
    """Load a CharLSTM for inference (eval mode).

    `source` is a local folder, a Hub repo id `user/name` or `user/name@revision`, a bundled
    model's name, or None for the bundled default model (assets/shakespeare); with `hub_only`, a
    source other than a bundled name is read as a Hub repo id. Only config.json and
    model.safetensors are read; `load_int8_check` reads the folder's int8.json.
    """
    path, revision = resolve_source(source, hub_only)
    local = _read_from_disk(path, source, hub_only)
    if local and os.path.isdir(path):
        _check_local_folder(path)
    elif local:
        raise ModelLoadError(f"{path} is a file; give the folder that holds config.json and {WEIGHTS_NAME}.")
    else:
        validate_repo_id(path)
    # Offline, only the local cache can help: ask for it alone instead of retrying the network.
    local_only = not local and not hub_reachable()
    try:
        # A repo id is downloaded here, never read as a folder of that name (see hub_only).
        folder = path if local else download_checkpoint(path, revision=revision, local_files_only=local_only)
        model = CharLSTM.from_pretrained(folder, map_location=device)
    except (CheckpointError, ModelLoadError) as err:
        raise ModelLoadError(str(err)) from None
    except Exception as err:
        raise ModelLoadError(hub_error_sentence(path, revision, err)) from None
    return model


def load_int8_check(source: str | os.PathLike | None = None, hub_only: bool = False) -> dict | None:
    """The int8 check (int8.json: the loss of fp32 and int8 steps on held-out text) of a model
    folder or Hub repo, or None when it has none or it cannot be read as one. lstm_model.serving
    decides from it whether int8 steps may serve the model."""
    try:
        path, revision = resolve_source(source, hub_only)
        if _read_from_disk(path, source, hub_only) and os.path.isdir(path):
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


def hub_error_sentence(repo_id: str, revision: str | None, err: Exception) -> str:
    """One sentence for each way a Hub download fails, saying what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"'{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if hub_offline():
            return (f"The model {where} is not in the local Hub cache and HF_HUB_OFFLINE is set; "
                    "unset HF_HUB_OFFLINE to download it, or give a local folder.")
        return (f"Could not reach the Hugging Face Hub ({hub_url()}) to download the model {where}, and it is not in "
                "the local cache; check your internet connection (or HF_ENDPOINT), or give a local folder.")
    if isinstance(err, GatedRepoError):  # before RepositoryNotFoundError, its parent class
        return (f"The model repo {where} is gated: accept its conditions on its Hub page, then log in with "
                "`hf auth login` (or set HF_TOKEN).")
    if isinstance(err, RepositoryNotFoundError):
        return (f"There is no model repo '{repo_id}' on the Hub (or it is private and you are not logged in); "
                "check the id, or log in with `hf auth login`.")
    if isinstance(err, RevisionNotFoundError):
        return f"The model repo '{repo_id}' has no branch, tag or commit '{revision}'; check the revision after the @."
    if isinstance(err, EntryNotFoundError):
        url = str(getattr(getattr(err, "response", None), "url", "") or "")
        if url.endswith("/" + CONFIG_NAME):
            return (f"The Hub repo {where} has no {CONFIG_NAME}, so it is not a CharLSTM model; give a repo written by "
                    "save_pretrained() or push_to_hub() of this project.")
        return (f"The Hub repo {where} has a {CONFIG_NAME} but no {WEIGHTS_NAME}; only safetensors CharLSTM "
                "checkpoints can be loaded (upload one with `python -m lstm_model.publish push FOLDER REPO`).")
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", "?")
        return (f"The Hub answered with an error (HTTP {status}) while downloading the model {where}; "
                "try again later, or give a local folder.")
    if isinstance(err, OSError):  # the connection dropped mid-download, a full disk, an unwritable cache
        return (f"Could not download the model {where} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "check your connection and the free space of the Hub cache (HF_HOME), or give a local folder.")
    return f"Could not load the model {where} ({type(err).__name__}: {err}); check the id or give a local folder."


# -- pushing models (deploying the app: publish.py) ---------------------------------------------

# What a model repo needs: everything load_model and load_int8_check read, the card, and the
# training record (never training_state.safetensors, the optimizer's resume file).
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, INT8_CHECK_FILE, "README.md", "metrics.jsonl", "final_metrics.json",
               "loss_curve.png", "train_config.json")


def push_error(what: str, repo_id: str, err: Exception, then: str) -> ModelLoadError:
    """One sentence for a failed upload: what failed, why (token, permission, the Hub's answer,
    offline, unreachable) and `then`, what happens or what to do next."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401 or isinstance(err, RepositoryNotFoundError):
        why = "the Hub did not accept your token: log in with `hf auth login` (a token with write access) or set HF_TOKEN"
    elif status == 403:
        why = f"your token may not write to '{repo_id}': use your own user or organisation name and a write token"
    elif isinstance(err, HfHubHTTPError):
        why = f"the Hub answered with an error (HTTP {status}: {str(err).splitlines()[0]}); try again later"
    elif hub_offline():
        why = "HF_HUB_OFFLINE is set, which forbids uploads: unset it"
    elif not hub_reachable():
        why = f"the Hugging Face Hub ({hub_url()}) cannot be reached: check your connection (or HF_ENDPOINT)"
    else:
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return ModelLoadError(f"Could not {what} '{repo_id}': {why}. {then}")


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model folder to the Hub: MODEL_FILES that exist (weights, config, int8.json, card,
    training record). Uses the usual token sources (HF_TOKEN, `hf auth login`). Returns the repo
    URL; raises ModelLoadError with one sentence on failure (the local folder is untouched)."""
    from huggingface_hub import HfApi

    validate_repo_id(repo_id)
    _check_local_folder(str(folder))
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", allow_patterns=list(MODEL_FILES),
                          commit_message="Upload CharLSTM trained with LSTM Memory Chat")
    except Exception as err:
        raise push_error("push the model to the Hub repo", repo_id, err,
                          f"The local checkpoint is kept; push it later with `python -m lstm_model.publish push {folder} {repo_id}`.") from None
    return str(url)
