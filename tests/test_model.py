import json
import os

import pytest
import torch

from lstm_model import CharLSTM, load_model
from lstm_model.hub import ModelLoadError


def test_shapes_and_begin_state(small_model):
    h, c = small_model.begin_state(3)
    assert h.shape == c.shape == (2, 3, 16)
    assert not h.any() and not c.any()
    ids = torch.randint(0, small_model.vocab_size, (3, 11))
    logits, (h2, c2) = small_model(ids)
    assert logits.shape == (3, 11, small_model.vocab_size)
    assert h2.shape == (2, 3, 16)
    # Feeding in two pieces with the carried state equals one call.
    logits_a, state = small_model(ids[:, :5])
    logits_b, _ = small_model(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat([logits_a, logits_b], 1), logits)


def test_save_and_load_round_trip_gives_identical_logits(small_model, tmp_path):
    small_model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= set(os.listdir(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab"] == small_model.vocab.chars and config["hidden_size"] == 16
    ids = torch.randint(0, small_model.vocab_size, (2, 30))
    for loaded in (CharLSTM.from_pretrained(tmp_path), load_model(tmp_path)):
        assert torch.equal(loaded(ids)[0], small_model(ids)[0])
        assert loaded.turn_separator == small_model.turn_separator
        assert loaded.vocab == small_model.vocab


def test_bundled_default_model_loads():
    model = load_model()
    assert model.num_layers == 2 and model.vocab_size > 30
    assert model.stop_sequence == "\n\n"


def test_pickle_weights_are_refused_without_unpickling(small_model, tmp_path):
    small_model.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 10**9}, "hidden_size"),
    ({"vocab": ["a", "a"]}, "more than once"),
    ({"num_layers": 0}, "num_layers"),
    ({"dropout": 2}, "dropout"),
])
def test_absurd_configs_are_refused_before_allocation(small_model, tmp_path, change, message):
    small_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=message):
        load_model(tmp_path)


def test_mismatched_and_nan_weights_are_refused(small_model, tmp_path):
    from safetensors.torch import save_file

    small_model.save_pretrained(tmp_path)
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    state["head.weight"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(tmp_path)
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    state["head.bias"][0] = float("nan")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="NaN"):
        load_model(tmp_path)
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    state["extra"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="unexpected"):
        load_model(tmp_path)


@pytest.mark.parametrize("source", ["not a repo id", "a/b/c/d", "user/na me"])
def test_invalid_sources_are_clear(source):
    with pytest.raises(ModelLoadError):
        load_model(source)


def test_an_offline_hub_is_one_clear_sentence():
    with pytest.raises(ModelLoadError, match="not in the local Hub cache and HF_HUB_OFFLINE is set") as info:
        load_model("someone/some-char-lstm@main")
    assert "\n" not in str(info.value)


def test_integer_weights_are_refused(small_model, tmp_path):
    from safetensors.torch import save_file

    small_model.save_pretrained(tmp_path)
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    state["head.bias"] = state["head.bias"].to(torch.int32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="dtype"):
        load_model(tmp_path)


def test_repo_ids_are_validated_before_any_request(monkeypatch):
    import lstm_model.hub as hub

    def no_request(*args, **kwargs):
        raise AssertionError("the id reached the loader")

    monkeypatch.setattr(hub.CharLSTM, "from_pretrained", no_request)
    monkeypatch.setattr(hub, "hub_reachable", no_request)
    for bad in ["../../etc/passwd", "user/name/../x", "user//name", "-user/name", "user/" + "x" * 200]:
        with pytest.raises(ModelLoadError):
            load_model(bad)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc (Linux)")
def test_a_huge_config_with_small_weights_is_refused_before_allocation(play_text, tmp_path):
    import json
    import subprocess
    import sys

    CharLSTM(vocab=sorted(set(play_text)), embed_dim=8, hidden_size=16, num_layers=1).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(hidden_size=7000, embed_dim=8192, num_layers=1)  # ~426M parameters, within the limits
    (tmp_path / "config.json").write_text(json.dumps(config))
    # The child's peak RSS is VmHWM, which starts anew at exec (ru_maxrss would include this process's).
    code = ("import sys\nfrom lstm_model import load_model\nfrom lstm_model.hub import ModelLoadError\n"
            "try:\n    load_model(sys.argv[1])\nexcept ModelLoadError as err:\n    print(err)\n"
            "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True,
                            timeout=120)
    assert "has shape" in result.stdout and "config.json implies" in result.stdout, result.stderr
    peak_kb = int(result.stdout.split()[-1])
    assert peak_kb < 1_000_000  # KB: the 1.7 GB model was never allocated


def test_a_repo_id_loads_from_the_hub_cache_and_its_spellings_share_one_key(trained_dir, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    from lstm_model.hub import load_int8_check, source_key

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-lstm"  # the Hub cache's layout, as a download leaves it
    shutil.copytree(trained_dir[0], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    model = load_model("someone/tiny-lstm")  # offline: from the cache
    assert model.hidden_size == load_model(trained_dir[0]).hidden_size
    assert load_int8_check("someone/tiny-lstm@main") is not None
    keys = {source_key(s) for s in ("someone/tiny-lstm", "someone/tiny-lstm@main", f"someone/tiny-lstm@{commit}")}
    assert keys == {f"someone/tiny-lstm@{commit}"}
