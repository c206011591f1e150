"""Publishing and loading through the Hub's HTTP API, against a local stand-in for the Hub
(tests/hub_standin.py) reached the way users reach the Hub: repo ids, HF_ENDPOINT, tokens."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from lstm_model import load_model
from lstm_model.hub import INT8_CHECK_FILE, MODEL_FILES, ModelLoadError, load_int8_check, push_folder, source_key
from lstm_model.model import CONFIG_NAME, WEIGHTS_NAME, CharLSTM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "standin-user/char-lstm"


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme[4:readme.index("\n---", 4)])


def model_files(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in (CONFIG_NAME, WEIGHTS_NAME, INT8_CHECK_FILE)
            if os.path.exists(os.path.join(folder, name))}


def test_push_carries_what_the_loader_reads_and_loads_by_repo_id_branch_tag_and_commit(trained_dir, tmp_path, hub):
    folder = trained_dir[0]
    local = load_model(folder)
    assert push_folder(folder, REPO).endswith(REPO)
    pushed = hub.files(REPO)
    expected = {name for name in os.listdir(folder) if name in MODEL_FILES} | {".gitattributes"}
    assert set(pushed) == expected
    assert {CONFIG_NAME, WEIGHTS_NAME, INT8_CHECK_FILE, "README.md"} <= set(pushed)
    assert "training_state.safetensors" in os.listdir(folder)  # the resume file stays home
    import hashlib

    assert hashlib.sha256(pushed[WEIGHTS_NAME]).hexdigest() in hub.lfs  # the weights went through LFS

    first = hub.repo(REPO).refs["main"]
    hub.repo(REPO).refs["v1"] = first  # a tag
    assert same_weights(load_model(REPO), local)
    assert load_int8_check(REPO) == json.load(open(os.path.join(folder, INT8_CHECK_FILE)))
    assert source_key(REPO) == f"{REPO}@{first}" == source_key(f"{REPO}@v1")

    # A second push moves main; the tag and the commit still give the first weights.
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    retrained = load_model(folder)
    with torch.no_grad():
        retrained.head.bias.add_(1.0)
    retrained.save_pretrained(changed)
    push_folder(changed, REPO)
    assert hub.repo(REPO).refs["main"] != first
    assert same_weights(load_model(REPO), retrained)
    for old in (f"{REPO}@v1", f"{REPO}@{first}", f"{REPO}@{first[:10]}"):
        assert same_weights(load_model(old), local), old


def test_each_hub_failure_is_its_own_sentence(trained_dir, hub, monkeypatch):
    files = model_files(trained_dir[0])
    hub.add_repo("u/gated", files, gated=True)
    hub.add_repo("u/readme-only", {"README.md": b"# not a model\n"})
    hub.add_repo("u/config-only", {CONFIG_NAME: files[CONFIG_NAME]})
    hub.add_repo("u/ok", files)
    cases = {
        "u/missing": ["no model repo 'u/missing'", "hf auth login"],
        "u/ok@nope": ["no branch, tag or commit 'nope'", "after the @"],
        "u/gated": ["gated", "accept its conditions", "hf auth login"],
        "u/readme-only": ["has no config.json", "not a CharLSTM model"],
        "u/config-only": ["has a config.json but no model.safetensors"],
    }
    said = {}
    for source, words in cases.items():
        with pytest.raises(ModelLoadError) as err:
            load_model(source)
        said[source] = str(err.value)
        assert all(w in said[source] for w in words), said[source]
    assert len(set(said.values())) == len(cases)
    hub.repo("u/gated").granted.add("hf_standin_token")  # the user accepted the conditions
    assert load_model("u/gated").num_parameters() > 0

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline on purpose, not cached
    with pytest.raises(ModelLoadError, match="not in the local Hub cache and HF_HUB_OFFLINE is set"):
        load_model("u/ok")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    from huggingface_hub import constants

    from lstm_model import data

    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    monkeypatch.setenv("HF_ENDPOINT", closed)
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(data, "_PROBES", {})
    with pytest.raises(ModelLoadError, match=r"Could not reach the Hugging Face Hub \(http://127.0.0.1:9\)"):
        load_model("u/ok")


def test_a_cached_model_loads_when_the_hub_is_gone(trained_dir, hub, monkeypatch):
    hub.add_repo("u/cached", model_files(trained_dir[0]))
    first = load_model("u/cached")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert same_weights(load_model("u/cached"), first)


def test_cards_carry_the_hub_metadata(trained_dir):
    card = open(os.path.join(trained_dir[0], "README.md"), encoding="utf-8").read()
    meta = front_matter(card)
    metrics = json.load(open(os.path.join(trained_dir[0], "final_metrics.json")))
    assert meta["language"] == "en" and meta["library_name"] == "lstm-memory-chat" and meta["license"] == "mit"
    assert {"lstm", "char-level", "model_hub_mixin", "pytorch_model_hub_mixin"} <= set(meta["tags"])
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "validation" and result["task"]["type"] == "text-generation"
    loss = {m["type"]: m["value"] for m in result["metrics"]}
    assert loss["loss"] == round(metrics["val_loss_full"], 4)  # the whole held-out split, read once
    assert loss["bpc"] == round(metrics["val_bpc_full"], 4)


@pytest.mark.parametrize("name", ["shakespeare", "timemachine"])
def test_bundled_cards_report_the_loss_their_text_states(name):
    from lstm_model.cards import read_metrics

    card = open(os.path.join(ROOT, "assets", name, "README.md"), encoding="utf-8").read()
    meta = front_matter(card)
    metrics = read_metrics(card)
    result = meta["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in result["metrics"]}["loss"] == metrics["validation loss (nats/char)"]
    assert meta["language"] == "en" and "pytorch_model_hub_mixin" in meta["tags"]
    if name == "shakespeare":
        assert meta["datasets"] == ["karpathy/tiny_shakespeare"] == [result["dataset"]["type"]]


def test_push_to_hub_writes_the_project_card(small_model, hub):
    small_model.push_to_hub("standin-user/small")
    pushed = hub.files("standin-user/small")
    readme = pushed["README.md"].decode()
    assert "LSTM Memory Chat" in readme and "Intended use and limits" in readme
    assert "pytorch_model_hub_mixin" in front_matter(readme)["tags"]
    assert same_weights(CharLSTM.from_pretrained("standin-user/small"), small_model)


def test_a_push_without_a_token_says_to_log_in(trained_dir, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", os.path.join(os.path.dirname(trained_dir[0]), "no-login"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(os.path.dirname(trained_dir[0]), "no-login", "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", os.path.join(os.path.dirname(trained_dir[0]), "no-login", "t"))
    with pytest.raises(ModelLoadError) as err:
        push_folder(trained_dir[0], "standin-user/no-token")
    assert "hf auth login" in str(err.value) and "python -m lstm_model.publish push" in str(err.value)
    assert ("model", "standin-user/no-token") not in hub.repos


def test_a_dataset_loads_by_hub_id_and_failures_are_sentences(hub):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lstm_model.data import DataError, load_corpus

    def parquet(rows):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": rows}), buf)
        return buf.getvalue()

    hub.add_repo("u/play", {"data/train-00000-of-00001.parquet": parquet(["ANNA:\nThe sea.", "BEN:\nThe moon."]),
                            "data/validation-00000-of-00001.parquet": parquet(["CLEO:\nHome."])}, repo_type="dataset")
    corpus = load_corpus("u/play")
    assert corpus.train == "ANNA:\nThe sea.\nBEN:\nThe moon." and corpus.val == "CLEO:\nHome." and corpus.val_from == "split:validation"
    with pytest.raises(DataError, match="There is no dataset 'u/nothing' on the Hub"):
        load_corpus("u/nothing")
    with pytest.raises(DataError, match="has no branch, tag or commit 'v9'"):
        load_corpus("u/play", revision="v9")


GRADIO_PIN = re.search(r"^gradio==(\S+)$", open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8").read(),
                       re.M)[1]


def assert_space_readme(readme: str, models: list[str]) -> dict:
    """`readme`, a Space's README.md, carries the Space's configuration (deploy/space.yaml) as front
    matter the Hub accepts, naming `models`, and then the repository's README.md whole: its metadata."""
    from hub_standin import front_matter_errors

    meta = front_matter(readme)
    assert front_matter_errors(readme, "space") == []
    config = yaml.safe_load(open(os.path.join(ROOT, "deploy", "space.yaml"), encoding="utf-8"))
    for key, value in config.items():
        assert key == "models" or meta.get(key) == value, key
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["python_version"] == "3.11"
    assert meta["sdk_version"] == GRADIO_PIN and meta["models"] == models
    body = readme[readme.index("\n---", 4) + len("\n---\n"):].lstrip("\n")
    assert body == open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return meta


def test_the_readme_has_no_front_matter_and_the_space_config_is_valid(capsys):
    """The Space's configuration lives in deploy/space.yaml: the repository's README opens with its
    title, and the README a deploy makes is that configuration over the README, with the pinned gradio."""
    from lstm_model.publish import SpaceConfigError, main, read_space_readme, space_readme

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert not readme.startswith("---") and readme.startswith("# ")
    meta = assert_space_readme(read_space_readme(ROOT), models=[])
    assert "preload_from_hub" not in meta
    assert main(["space", "standin-user/chat", "--readme"]) == 0  # what the git deploy writes
    assert capsys.readouterr().out == read_space_readme(ROOT)
    with_model = space_readme(readme, open(os.path.join(ROOT, "deploy", "space.yaml"), encoding="utf-8").read(),
                              "u/m@v2", ["config.json", "model.safetensors"])
    meta = assert_space_readme(with_model, models=["u/m"])
    assert meta["preload_from_hub"] == ["u/m config.json,model.safetensors v2"]
    with pytest.raises(SpaceConfigError, match="deploy/space.yaml"):
        space_readme("---\nsdk: gradio\n---\n# An app\n", "sdk: gradio\n")


def _run(args, env, cwd=ROOT):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_space_deploy_uploads_exactly_what_the_app_needs(trained_dir, hub, tmp_path):
    from lstm_model.publish import space_files

    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_standin_token", HF_HUB_DISABLE_XET="1",
               HF_HUB_CACHE=str(tmp_path / "cache"))
    env.pop("HF_HUB_OFFLINE", None)
    space = "standin-user/chat"
    done = _run(["-m", "lstm_model.publish", "space", space], env)
    assert done.returncode == 0, done.stderr
    assert f"{hub.endpoint}/spaces/{space}" in done.stdout
    uploaded = hub.files(space, "space")
    assert hub.repo(space, "space").sdk == "gradio"
    assert set(uploaded) == set(space_files()) | {".gitattributes"}
    assert not [p for p in uploaded if p.split("/")[0] in ("tests", ".ci", ".venv", "runs") or "__pycache__" in p]
    for path in space_files():
        if path != "README.md":
            assert uploaded[path] == open(os.path.join(ROOT, path), "rb").read()
    assert_space_readme(uploaded["README.md"].decode(), models=[])
    # Every page the README links to is there.
    for link in re.findall(r"\]\(([^)#:]+)\)", uploaded["README.md"].decode()):
        assert link in uploaded, link

    # The uploaded files alone run the app: build it from a folder holding only them.
    site = tmp_path / "space"
    for path, content in uploaded.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(content)
    code = ("import app\nopts = app.parse_args([])\nassert opts.custom_models is False\n"
            "demo = app.build_app(options=opts)\nprint('built', type(demo).__name__)")
    run_env = dict(env, SPACE_ID=space, PYTHONPATH="", HF_HUB_OFFLINE="1")
    built = _run(["-c", code], run_env, cwd=site)
    assert built.returncode == 0 and "built Blocks" in built.stdout, built.stderr[-2000:]

    # A redeploy with a Hub model: the file a previous deploy left is deleted, MODEL is set, the
    # README names the model and preloads its files.
    hub.repo(space, "space").commit(dict(uploaded, **{"old_module.py": b"print('stale')\n"}))
    push_folder(trained_dir[0], REPO)
    done = _run(["-m", "lstm_model.publish", "space", space, "--model", REPO], env)
    assert done.returncode == 0, done.stderr
    uploaded = hub.files(space, "space")
    assert "old_module.py" not in uploaded and set(uploaded) == set(space_files()) | {".gitattributes"}
    assert hub.repo(space, "space").variables == {"MODEL": REPO}
    meta = assert_space_readme(uploaded["README.md"].decode(), models=[REPO])
    assert meta["preload_from_hub"] == [f"{REPO} config.json,model.safetensors,int8.json"]

    # A model the Space could not load is refused before the Space is touched.
    before = hub.repo(space, "space").refs["main"]
    done = _run(["-m", "lstm_model.publish", "space", space, "--model", "standin-user/absent"], env)
    assert done.returncode == 1 and "no model repo 'standin-user/absent'" in done.stderr
    assert "Traceback" not in done.stderr and hub.repo(space, "space").refs["main"] == before


def test_the_app_serves_the_model_named_by_MODEL_and_locks_the_picker_on_a_space(trained_dir, hub):
    import gradio as gr

    import app as app_module
    from ui.actions import ChatApp

    push_folder(trained_dir[0], REPO)
    options = app_module.parse_args([], {"MODEL": REPO, "SPACE_ID": "standin-user/chat"})
    assert options.model == REPO and options.custom_models is False and options.on_space
    chat = ChatApp(options)
    assert same_weights(chat.default.model, load_model(trained_dir[0]))
    assert chat.choices()[-1] == REPO
    assert "Serving" in chat.model("timemachine")
    for refused in ("someone/else", trained_dir[0]):
        with pytest.raises(gr.Error) as err:
            chat.model(refused)
        assert "switched off" in err.value.message and "CUSTOM_MODELS" not in err.value.message
    assert app_module.parse_args([], {"SPACE_ID": "x/y", "CUSTOM_MODELS": "1"}).custom_models is True
    assert app_module.parse_args([], {}).custom_models is True
    assert app_module.parse_args(["--model", "timemachine"], {"MODEL": REPO}).model == "timemachine"
    with pytest.raises(SystemExit):
        app_module.parse_args([], {"CUSTOM_MODELS": "maybe"})


def test_share_on_a_space_says_it_does_not_apply(monkeypatch, capsys):
    import app as app_module

    launched = {}

    class Demo:
        local_url, share_url = "http://127.0.0.1:7860/", None
        plain_routes = ["the /chat/stream route"]

        def launch(self, **kwargs):
            launched.update(kwargs)

        def block_thread(self):
            pass

    monkeypatch.setenv("SPACE_ID", "standin-user/chat")
    monkeypatch.setattr(app_module, "build_app", lambda options: Demo())
    assert app_module.main(["--share"]) == 0
    assert launched["share"] is False and launched["app_kwargs"] == {"routes": ["the /chat/stream route"]}
    err = capsys.readouterr().err
    assert "--share does not apply on a Hugging Face Space" in err and "gradio.live?" not in err


@pytest.mark.skipif(shutil.which("git-lfs") is None or shutil.which("git") is None,
                    reason="git and git-lfs are needed (.ci/run installs git-lfs)")
def test_the_git_deploy_pushes_the_space_files_with_the_weights_in_lfs(tmp_path):
    from lstm_model.publish import space_files

    remote = tmp_path / "space.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    # A new Space already has a first commit of the Hub's making: the push must replace it.
    first = tmp_path / "first"
    subprocess.run(["git", "init", "-q", "-b", "main", str(first)], check=True)
    (first / "README.md").write_text("---\nsdk: gradio\n---\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(first)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "initial"], check=True)
    subprocess.run([*git, "push", "-q", f"file://{remote}", "main"], check=True)

    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(["bash", os.path.join(ROOT, "deploy", "push_space_with_git.sh"), "standin-user/chat",
                           f"file://{remote}"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    tree = subprocess.run(["git", "-C", str(remote), "ls-tree", "-r", "--name-only", "main"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert set(tree) == set(space_files()) | {".gitattributes"}
    for path in tree:
        blob = subprocess.run(["git", "-C", str(remote), "cat-file", "-p", f"main:{path}"], capture_output=True, check=True).stdout
        if path.endswith((".safetensors", ".png")):
            assert blob.startswith(b"version https://git-lfs.github.com/spec/v1"), path
        elif path == "README.md":
            assert_space_readme(blob.decode(), models=[])
        elif path != ".gitattributes":
            assert blob == open(os.path.join(ROOT, path), "rb").read(), path
    # A clone with git-lfs gets the real weights back.
    lfs = ["-c", "filter.lfs.smudge=git-lfs smudge -- %f", "-c", "filter.lfs.process=git-lfs filter-process",
           "-c", "filter.lfs.required=true", "-c", "filter.lfs.clean=git-lfs clean -- %f"]
    clone = tmp_path / "clone"
    subprocess.run(["git", *lfs, "clone", "-q", f"file://{remote}", str(clone)], check=True, capture_output=True)
    weights = "assets/shakespeare/model.safetensors"
    assert (clone / weights).read_bytes() == open(os.path.join(ROOT, weights), "rb").read()


def publish(capsys, argv) -> tuple[int, str]:
    """`python -m lstm_model.publish` in this process: its status and the last line of its stderr,
    having checked that it printed no traceback."""
    from cli_run import run_main

    from lstm_model.publish import main

    return run_main(main, argv, capsys)


def test_publish_refuses_what_is_no_model_folder_or_repo_id_in_one_sentence(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    project = tmp_path / "project"  # a README.md that is no model card (this project's, a Space's)
    project.mkdir()
    (project / "README.md").write_text("---\nsdk: gradio\n---\n# An app\n")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / CONFIG_NAME).write_text("{}")
    model_folder = "give a model folder, as `python -m lstm_model.train --out` writes"
    for argv, sentence in [
        (["card", "/nonexistent"], f"argument folder: /nonexistent is not a folder; {model_folder}"),
        (["card", str(tmp_path / "a-file")], f"argument folder: {tmp_path / 'a-file'} is not a folder"),
        (["card", str(tmp_path)], f"argument folder: {tmp_path} has no README.md or config.json; {model_folder}"),
        (["card", str(project)], f"argument folder: {project} has no config.json; {model_folder}"),
        (["push", "/nonexistent", REPO], "argument folder: /nonexistent is not a folder"),
        (["push", str(weightless), REPO], f"argument folder: {weightless} has no {WEIGHTS_NAME}; {model_folder}"),
        (["space", "not a repo", "--dry-run"], "argument repo_id: 'not a repo' is not a Hub repo id; give user/name"),
    ]:
        code, line = publish(capsys, argv)
        assert code == 2 and line.startswith(f"python -m lstm_model.publish {argv[0]}: error: ") and sentence in line
    assert (project / "README.md").read_text() == "---\nsdk: gradio\n---\n# An app\n"


def test_publish_card_rewrites_a_card_or_says_in_one_sentence_why_not(trained_dir, tmp_path, capsys, monkeypatch):
    import errno

    folder = tmp_path / "model"
    shutil.copytree(trained_dir[0], folder)
    code, line = publish(capsys, ["card", str(folder), "--language", "x y"])
    assert code == 2 and "argument --language: 'x y' is not a language code; give one such as en, fr or pt-BR" in line
    assert publish(capsys, ["card", str(folder), "--language", "fr"])[0] == 0
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert front_matter(card)["language"] == "fr" and "## Metrics" in card
    readme = folder / "README.md"
    for content, reason in [("---\nfoo: [unclosed\n---\n# A card\n", "has a metadata block this cannot read ("),
                            ("---\n- a list\n---\n# A card\n", "has a metadata block this cannot read ("),
                            (b"\xff\xfe not UTF-8", "Cannot read the model card")]:
        readme.write_bytes(content if isinstance(content, bytes) else content.encode())
        code, line = publish(capsys, ["card", str(folder)])
        assert code == 1 and line.startswith("error: ") and reason in line and str(readme) in line
        assert readme.read_bytes() == (content if isinstance(content, bytes) else content.encode())
    readme.write_text(card, encoding="utf-8")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("lstm_model.cards.atomic_path", denied)
    code, line = publish(capsys, ["card", str(folder), "--language", "de"])
    assert code == 1 and line == (f"error: Cannot write {readme} (Permission denied); it was left as it was: make the "
                                  "folder writable and run this again.")
    assert readme.read_text(encoding="utf-8") == card
