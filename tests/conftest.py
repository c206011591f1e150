"""Shared fixtures. Tests build their own small corpora and never need data files or the network."""

import os
import random
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="gradio-tests-"))
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-tests-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from lstm_model import CharLSTM  # noqa: E402

SPEAKERS = ["ANNA", "BEN", "CLEO"]
WORDS = "the sea is calm and the moon is bright so sing to me of home".split()


def make_play(n_speeches: int = 400, seed: int = 0) -> str:
    """A small synthetic play: a speaker's name and colon, one or two lines, a blank line."""
    rng = random.Random(seed)
    speeches = []
    for _ in range(n_speeches):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))).capitalize() + "." for _ in range(rng.randint(1, 2))]
        speeches.append(rng.choice(SPEAKERS) + ":\n" + "\n".join(lines))
    return "\n\n".join(speeches) + "\n"


@pytest.fixture(scope="session")
def play_text() -> str:
    return make_play()


@pytest.fixture(scope="session")
def play_file(tmp_path_factory, play_text):
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(play_text, encoding="utf-8")
    return str(path)


@pytest.fixture
def small_model(play_text):
    torch.manual_seed(0)
    return CharLSTM(vocab=sorted(set(play_text)), embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0).eval()


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, play_file):
    """A model trained by the training CLI on the synthetic play (a few seconds on CPU)."""
    from lstm_model.train import resolve_config, train

    out = tmp_path_factory.mktemp("trained") / "model"
    config = resolve_config([
        "--dataset", play_file, "--out", str(out), "--hidden-size", "48", "--embed-dim", "16", "--batch-size", "16",
        "--seq-len", "64", "--max-steps", "150", "--lr", "1e-2", "--warmup-steps", "10", "--eval-every", "50",
        "--eval-batches", "4", "--dropout", "0.0", "--quiet", "--sample-chars", "80",
    ])
    run = train(config)
    return str(out), run


@pytest.fixture(scope="session")
def trained_model(trained_dir):
    from lstm_model import load_model

    return load_model(trained_dir[0])


@pytest.fixture(scope="session")
def app_url():
    """The app (bundled model) launched for real on a free local port, shared by the API and
    browser tests (each client is its own session)."""
    import socket

    import app as app_module

    demo = app_module.build_app()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                app_kwargs={"routes": demo.plain_routes})
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local stand-in for the Hugging Face Hub (tests/hub_standin.py) that this process's
    huggingface_hub and datasets talk to, as they would to the Hub through HF_ENDPOINT, with an
    empty cache and a token. Upload tests go through the Hub's LFS protocol (Xet switched off)."""
    import datasets
    from hub_standin import HubStandIn
    from huggingface_hub import constants

    from lstm_model import data

    with HubStandIn() as standin:
        url = standin.endpoint
        for name, value in {"HF_ENDPOINT": url, "HF_TOKEN": "hf_standin_token", "HF_HUB_DISABLE_XET": "1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        for module, name, value in [
            (constants, "ENDPOINT", url),
            (constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"),
            (constants, "HF_HUB_OFFLINE", False),
            (constants, "HF_HUB_DISABLE_XET", True),
            (constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache")),
            (datasets.config, "HF_ENDPOINT", url),
            (datasets.config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}"),
            (datasets.config, "HF_HUB_OFFLINE", False),
            (datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache")),
        ]:
            monkeypatch.setattr(module, name, value)
        monkeypatch.setattr(data, "_PROBES", {})
        yield standin
