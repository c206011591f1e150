"""Publishing: a trained model to a Hub model repo, and this app to a Hugging Face Space.

    python -m lstm_model.publish space USER/NAME [--model SOURCE] [--private] [--dry-run | --list | --readme]
    python -m lstm_model.publish push FOLDER USER/NAME [--private]
    python -m lstm_model.publish card FOLDER [--dataset ID] [--language en]

`space` creates the Space (Gradio SDK) if needed and uploads exactly `space_files()` through
`huggingface_hub` in one commit (large files go to the Hub's LFS/Xet storage by themselves), its
README.md being `space_readme()`: the Space's configuration (deploy/space.yaml) as front matter above
this project's README.md;
`push` uploads a model folder (`hub.push_folder`); `card` rewrites a model card's metadata.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .cards import LANGUAGE_CODE, CardError, refresh_metadata
from .hub import (
    ASSETS,
    INT8_CHECK_FILE,
    ModelLoadError,
    bundled_models,
    hub_error_sentence,
    parse_source,
    push_error,
    push_folder,
    validate_repo_id,
)
from .model import CONFIG_NAME, WEIGHTS_NAME

PROJECT_ROOT = ASSETS.parent
# What the Space runs (the app, its packages, requirements, the bundled models) and the pages its
# README links to; never tests, benchmarks, virtual environments, runs or caches.
SPACE_FILES = ("app.py", "requirements.txt", "pre-requirements.txt", "README.md", "ARCHITECTURE.md", "docs/*.md",
               "benchmarks/README.md",
               "lstm_model/*.py", "ui/*.py", "assets/*.png", *(f"assets/*/{name}" for name in (
                   CONFIG_NAME, WEIGHTS_NAME, INT8_CHECK_FILE, "README.md")))
KEEP_IN_SPACE = (".gitattributes",)  # files the Hub made that a deploy leaves alone
# The Space's configuration (sdk, sdk_version, app_file, ...), kept out of README.md so that the
# repository's README opens with its title; a deploy writes it as the front matter of the Space's copy.
SPACE_CONFIG = "deploy/space.yaml"


class SpaceConfigError(ValueError):
    """The Space's README cannot be made (one sentence)."""


def space_files(root: str | os.PathLike = PROJECT_ROOT) -> list[str]:
    """The files a Space of this app needs, as paths relative to the project root (sorted)."""
    root = Path(root)
    found = {p.relative_to(root).as_posix() for pattern in SPACE_FILES for p in root.glob(pattern) if p.is_file()}
    return sorted(found)


def space_readme(readme: str, config: str, model: str | None = None, model_files: list[str] | None = None) -> str:
    """The Space's README.md: `config` (the text of deploy/space.yaml, the Space's configuration) as
    its front matter, then `readme` (this project's README.md, which has none); with `model` (a Hub
    repo id), `models:` and `preload_from_hub:` name it, so the Space links to it and downloads it at
    build time. SpaceConfigError if `readme` has front matter of its own (the Space would read only one)."""
    from huggingface_hub import SpaceCard

    if readme.startswith("---"):
        raise SpaceConfigError(f"README.md starts with front matter; the Space's configuration belongs in "
                               f"{SPACE_CONFIG}.")
    text = f"---\n{config.strip()}\n---\n\n{readme}"
    if model is None:
        return text
    card = SpaceCard(text)
    repo, revision = parse_source(model)
    card.data.models = [repo]
    card.data.preload_from_hub = [" ".join([repo, ",".join(model_files or [CONFIG_NAME, WEIGHTS_NAME])]
                                           + ([revision] if revision else []))]
    return str(card)


def read_space_readme(root: str | os.PathLike = PROJECT_ROOT, model: str | None = None,
                      model_files: list[str] | None = None) -> str:
    """`space_readme` of the project at `root`: its README.md under its deploy/space.yaml."""
    root = Path(root)
    return space_readme((root / "README.md").read_text(encoding="utf-8"),
                        (root / SPACE_CONFIG).read_text(encoding="utf-8"), model, model_files)


def _model_repo_files(api, model: str) -> list[str]:
    """The files of a Hub model that the app reads, checked before the Space is touched."""
    repo, revision = parse_source(model)
    validate_repo_id(repo)
    try:
        files = set(api.list_repo_files(repo, revision=revision))
    except Exception as err:
        raise ModelLoadError(hub_error_sentence(repo, revision, err)) from None
    if CONFIG_NAME not in files or WEIGHTS_NAME not in files:
        raise ModelLoadError(f"The Hub repo '{model}' lacks {CONFIG_NAME} or {WEIGHTS_NAME}; push a CharLSTM model "
                             "there first with `python -m lstm_model.publish push FOLDER REPO`.")
    return [name for name in (CONFIG_NAME, WEIGHTS_NAME, INT8_CHECK_FILE) if name in files]


def _space_model_files(api, model: str | None) -> list[str] | None:
    """For a Hub model the Space is to serve, the files its README preloads (checked on the Hub);
    None for no model or a bundled one (it ships in assets/)."""
    if model is None or model in bundled_models():
        return None
    if os.path.exists(model):
        raise ModelLoadError(f"A Space cannot read the local folder {model}; push it to the Hub with "
                             f"`python -m lstm_model.publish push {model} USER/NAME` and pass that repo id.")
    return _model_repo_files(api, model)


def space_readme_for(model: str | None = None, *, token: str | None = None,
                     root: str | os.PathLike = PROJECT_ROOT) -> str:
    """The README.md `deploy_space(..., model=model)` uploads (a Hub model is checked as it checks it)."""
    from huggingface_hub import HfApi

    model_files = _space_model_files(HfApi(token=token), model)
    return read_space_readme(root, model if model_files else None, model_files)


def deploy_space(repo_id: str, *, model: str | None = None, private: bool = False, token: str | None = None,
                 root: str | os.PathLike = PROJECT_ROOT, hardware: str | None = None) -> str:
    """Create (or update) a Gradio Space running this app: upload exactly `space_files()` in one
    commit, delete files a previous deploy left that the app no longer has, and, with `model` (a
    bundled model's name or a Hub repo id), set the Space variable MODEL (plus, for a Hub repo,
    `models:` and `preload_from_hub:` in the uploaded README). Returns the Space's URL;
    ModelLoadError with one sentence on failure."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    validate_repo_id(repo_id)
    api = HfApi(token=token)
    model_files = _space_model_files(api, model)
    root = Path(root)
    files = space_files(root)
    adds = [CommitOperationAdd(path, str(root / path)) for path in files if path != "README.md"]
    readme = read_space_readme(root, model if model_files else None, model_files)
    adds.append(CommitOperationAdd("README.md", readme.encode("utf-8")))
    try:
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                              space_hardware=hardware)
        old = set(api.list_repo_files(repo_id, repo_type="space"))
        deletes = [CommitOperationDelete(path) for path in sorted(old - set(files) - set(KEEP_IN_SPACE))]
        api.create_commit(repo_id, repo_type="space", operations=[*adds, *deletes],
                          commit_message="Deploy LSTM Memory Chat")
        if model is not None:
            api.add_space_variable(repo_id, "MODEL", model, description="the model the app serves (app.py reads MODEL)")
    except Exception as err:
        raise push_error("deploy the Space", repo_id, err, "Nothing on this machine was changed.") from None
    return str(url)


def _repo_id(text: str) -> str:
    """An argparse type: a Hub repo id, user/name."""
    import argparse

    try:
        validate_repo_id(text)
    except ModelLoadError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub repo id; give user/name (letters, digits, '-', "
                                         "'_', '.')") from None
    return text


def _model_folder(*needed: str):
    """An argparse type: a folder holding `needed`, as training writes a model folder. Checked here
    so that a wrong path is refused before anything is read, written or uploaded."""
    import argparse

    def check(path: str) -> str:
        if not os.path.isdir(path):
            raise argparse.ArgumentTypeError(f"{path} is not a folder; give a model folder, as `python -m "
                                             "lstm_model.train --out` writes")
        missing = [name for name in needed if not os.path.isfile(os.path.join(path, name))]
        if missing:
            raise argparse.ArgumentTypeError(f"{path} has no {' or '.join(missing)}; give a model folder, as "
                                             "`python -m lstm_model.train --out` writes")
        return path
    return check


def _language(text: str) -> str:
    """An argparse type: a language code for the card's metadata."""
    import argparse

    if not LANGUAGE_CODE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a language code; give one such as en, fr or pt-BR")
    return text


def _project_url(text: str) -> str:
    """An argparse type: an http(s) address without spaces or brackets (it goes into a Markdown link)."""
    import argparse

    if not re.fullmatch(r"https?://[^\s()<>\[\]]+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a web address; give one such as "
                                         "https://github.com/user/lstm-memory-chat")
    return text


def main(argv=None) -> int:
    """`python -m lstm_model.publish space USER/NAME` (deploy the app), `push FOLDER USER/NAME` (a
    model), `card FOLDER` (refresh a model card's metadata). A bad argument ends in one sentence and
    status 2 before anything is read or sent, a failure in one sentence and status 1."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m lstm_model.publish", description="Publish models and the app to the Hub.")
    sub = p.add_subparsers(dest="command", required=True)
    space = sub.add_parser("space", help="create or update a Gradio Space running this app")
    space.add_argument("repo_id", type=_repo_id, help="the Space, user/name")
    space.add_argument("--model", help="the model it serves: a bundled model's name or a Hub repo id[@revision]")
    space.add_argument("--private", action="store_true")
    space.add_argument("--dry-run", action="store_true", help="list the files it would upload (with sizes) and stop")
    space.add_argument("--list", action="store_true", help="print only the paths it would upload, one a line, and stop")
    space.add_argument("--readme", action="store_true",
                       help=f"print only the README.md it would upload ({SPACE_CONFIG} as front matter, then "
                            "README.md), and stop")
    push = sub.add_parser("push", help="upload a trained model folder to a model repo")
    push.add_argument("folder", type=_model_folder(CONFIG_NAME, WEIGHTS_NAME))
    push.add_argument("repo_id", type=_repo_id)
    push.add_argument("--private", action="store_true")
    card = sub.add_parser("card", help="rewrite a model card's metadata (model-index, tags) from its text")
    # config.json too: a README.md alone (this project's, a Space's) is no model card to rewrite
    card.add_argument("folder", type=_model_folder("README.md", CONFIG_NAME))
    card.add_argument("--dataset", help="the Hub dataset id the model was trained on (default: the one the card names)")
    card.add_argument("--language", type=_language, default="en", help="the model's language code (default en)")
    card.add_argument("--project-url", type=_project_url, metavar="URL",
                      help="link the project's name in the card to this address (cards link none otherwise)")
    args = p.parse_args(argv)
    try:
        if args.command == "space":
            if args.list:
                print("\n".join(space_files()))
                return 0
            if args.readme:
                print(space_readme_for(args.model), end="")
                return 0
            if args.dry_run:
                files = space_files()
                for path in files:
                    print(f"{(PROJECT_ROOT / path).stat().st_size:>12,}  {path}")
                total = sum((PROJECT_ROOT / f).stat().st_size for f in files)
                print(f"{len(files)} files, {total / 1e6:.1f} MB would be uploaded to the Space {args.repo_id}.")
                return 0
            url = deploy_space(args.repo_id, model=args.model, private=args.private)
            print(f"Deployed to {url}; the Space builds and starts in a few minutes.")
        elif args.command == "push":
            print(f"Pushed to {push_folder(args.folder, args.repo_id, private=args.private)}")
        else:
            refresh_metadata(args.folder, dataset=args.dataset, language=args.language, project_url=args.project_url)
            print(f"Rewrote the metadata of {os.path.join(args.folder, 'README.md')}")
    except (ModelLoadError, CardError, SpaceConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
