import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from lstm_model import CharLSTM, load_model
from lstm_model.train import STATE_NAME, TrainingStopped, resolve_config, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--hidden-size", "24", "--embed-dim", "8", "--batch-size", "8", "--seq-len", "32", "--eval-every", "4",
         "--eval-batches", "2", "--quiet", "--sample-chars", "20", "--warmup-steps", "3", "--dropout", "0.1"]


def test_small_model_learns_the_synthetic_play(trained_dir):
    out, run = trained_dir
    # A uniform guess over the play's ~30 characters costs ln(30) = 3.4 nats; the play's
    # structure (names, a small word list, blank lines) is learnable well below 1.2.
    assert run.metrics["val_loss"] < 1.2, run.metrics
    assert run.metrics["val_loss_full"] < 1.2
    assert run.losses[0] > 3.0
    for name in ("config.json", "model.safetensors", "README.md", "metrics.jsonl", "loss_curve.png", STATE_NAME):
        assert os.path.isfile(os.path.join(out, name)), name
    card = open(os.path.join(out, "README.md")).read()
    assert "val_loss_full" in card and "## Sample" in card and "library_name: lstm-memory-chat" in card


@pytest.mark.parametrize("extra", [[], ["--ema", "0.9"]], ids=["weights", "moving-average"])
def test_resume_continues_the_same_loss_sequence(play_file, tmp_path, extra):
    """Interrupted and resumed, a run is the run that never stopped: losses, saved weights (with
    --ema, their moving average, kept in the checkpoint) and log."""
    full = train(resolve_config(SMALL + extra + ["--dataset", play_file, "--out", str(tmp_path / "full"),
                                                 "--max-steps", "14"]))

    stop_at = 6

    class Interrupt(Exception):
        pass

    # Interrupt a run like Ctrl-C after `stop_at` steps: it saves and returns.
    import lstm_model.train as train_module

    original = train_module._log
    calls = {"n": 0}

    def log_then_interrupt(path, record):
        original(path, record)
        if "loss" in record:
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt

    train_module._log = log_then_interrupt
    try:
        first = train(resolve_config(SMALL + extra + ["--dataset", play_file, "--out", str(tmp_path / "part"),
                                                      "--max-steps", "14"]))
    finally:
        train_module._log = original
    assert first.stopped == "interrupted" and first.step == stop_at
    second = train(resolve_config(["--out", str(tmp_path / "part"), "--resume", "--quiet"]))
    assert second.step == 14
    assert first.losses + second.losses == full.losses
    a, b = load_model(tmp_path / "full"), load_model(tmp_path / "part")
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name
    # The metrics log reads like one run.
    steps = [json.loads(line)["step"] for line in open(tmp_path / "part" / "metrics.jsonl") if "loss" in json.loads(line)]
    assert steps == list(range(1, 15))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(play_file, tmp_path):
    out = tmp_path / "nan"
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "4"]))
    before = open(out / "model.safetensors", "rb").read()
    with torch.no_grad():
        import lstm_model.train as train_module

        original = train_module.nn.functional.cross_entropy

        def poisoned(*args, **kwargs):
            return original(*args, **kwargs) * float("nan")

        train_module.nn.functional.cross_entropy = poisoned
    try:
        with pytest.raises(TrainingStopped, match="nan.*last good checkpoint"):
            train(resolve_config(["--out", str(out), "--resume", "--max-steps", "8", "--quiet"]))
    finally:
        train_module.nn.functional.cross_entropy = original
    assert open(out / "model.safetensors", "rb").read() == before
    kept = load_model(out)
    assert all(torch.isfinite(p).all() for p in kept.parameters())


def test_config_file_with_cli_overrides(play_file, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dataset": play_file, "hidden_size": 20, "max_steps": 3, "embed_dim": 4}))
    config = resolve_config(["--config", str(cfg), "--hidden-size", "12", "--out", str(tmp_path / "o")])
    assert config.hidden_size == 12 and config.max_steps == 3 and config.embed_dim == 4
    run = train(dataclass_replace(config, quiet=True, eval_every=3, eval_batches=1, sample_chars=5))
    saved = json.load(open(tmp_path / "o" / "train_config.json"))
    assert saved["hidden_size"] == 12 and run.step == 3


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_unwritable_output_and_bad_settings_are_clear(play_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TrainingStopped, match="writable --out"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(blocker / "sub"), "--max-steps", "1"]))
    with pytest.raises(TrainingStopped, match="--dropout"):
        resolve_config(["--dropout", "1.5"])


def test_cli_end_to_end_and_failed_push_keeps_the_checkpoint(play_file, tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "lstm_model.train", "--dataset", play_file, "--out", str(out), "--max-steps", "5",
         *SMALL, "--push-to-hub", "someone/char-lstm-test"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Could not push" in result.stderr and "local checkpoint is kept" in result.stderr
    assert "Traceback" not in result.stderr
    model = CharLSTM.from_pretrained(str(out))
    assert model.hidden_size == 24
    text = subprocess.run(
        [sys.executable, "-m", "lstm_model.generate", "--model", str(out), "--prompt", "ANNA:", "--length", "40", "--seed", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert text.returncode == 0 and text.stdout.startswith("ANNA:") and len(text.stdout) >= 40


def test_ema_evaluates_and_saves_the_weights_moving_average(play_file, tmp_path):
    """--ema D: the model folder (and so the card, the app, the Hub) holds the moving average of the
    weights, not the last weights, which the checkpoint keeps for training; each evaluation logs
    both; the average follows avg <- d avg + (1 - d) w with d = min(D, (1 + n) / (10 + n))."""
    from safetensors.torch import load_file

    from lstm_model.train import moving_average

    out = tmp_path / "ema"
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "8", "--ema", "0.5"]))
    state, saved = load_file(str(out / STATE_NAME)), load_model(str(out))
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, state[f"average.module.{name}"]), name
    assert any(not torch.equal(t, state[f"model.{n}"]) for n, t in saved.state_dict().items())
    evals = [json.loads(line) for line in open(out / "metrics.jsonl") if "val_loss" in line]
    assert evals and all(math.isfinite(e["val_loss_weights"]) and e["val_loss"] != e["val_loss_weights"] for e in evals)

    model = torch.nn.Linear(1, 1, bias=False)
    average, expected = moving_average(model, 0.3), None
    for n, w in enumerate([1.0, 5.0, -2.0, 4.0]):
        model.weight.data.fill_(w)
        average.update_parameters(model)
        d = min(0.3, (1 + n) / (10 + n))
        expected = w if expected is None else d * expected + (1 - d) * w
        assert average.module.weight.item() == pytest.approx(expected)
    with pytest.raises(TrainingStopped, match="--ema must be in"):
        resolve_config(["--dataset", play_file, "--ema", "1"])


def test_existing_run_needs_resume(play_file, tmp_path):
    out = tmp_path / "again"
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "2"]))
    with pytest.raises(TrainingStopped, match="--resume"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "2"]))
    assert math.isfinite(json.load(open(out / "final_metrics.json"))["val_loss_full"])


def test_full_disk_gives_a_clear_message(play_file, tmp_path, monkeypatch):
    import errno

    import lstm_model.train as train_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "save_model_folder", full)
    with pytest.raises(TrainingStopped, match="No space left on device.*free disk space"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "full"), "--max-steps", "4"]))
    # The training state itself was written before the model folder failed: --resume can go on.
    assert (tmp_path / "full" / STATE_NAME).exists()


@pytest.mark.parametrize("flags, sentence", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--epochs", "nan"], "--epochs must be a finite number"),
    (["--epochs", "inf"], "--epochs must be a finite number"),
    (["--sample-chars", "-1"], "--sample-chars must be from 0 to 20000"),
    (["--hidden-size", "100000"], "--hidden-size must be from 1 to 8192"),
    (["--warmup-steps", "-5"], "--warmup-steps must be at least 0"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio must be in"),
])
def test_bad_arguments_end_in_one_sentence_before_anything_is_read(flags, sentence):
    with pytest.raises(TrainingStopped, match=sentence.replace("-", "\\-")):
        resolve_config(["--dataset", "no/such-dataset"] + flags)


def test_sizes_and_windows_are_refused_before_training(play_file, tmp_path):
    with pytest.raises(TrainingStopped, match="parameters, over the limit"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "a"), "--hidden-size", "8000",
                                      "--num-layers", "8", "--max-steps", "1"]))
    with pytest.raises(TrainingStopped, match="--seq-len 1000000 is longer than each of the"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "b"), "--seq-len", "1000000",
                                      "--max-steps", "1"]))
    assert not (tmp_path / "a" / "model.safetensors").exists() and not (tmp_path / "b" / "metrics.jsonl").exists()


@pytest.mark.parametrize("content, sentence", [
    ("", "too small"),
    (b"\x00\xb4\xff" * 1000, "UTF-8 text"),
])
def test_unreadable_corpora_end_in_one_sentence_when_streamed(content, sentence, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = subprocess.run([sys.executable, "-m", "lstm_model.train", "--dataset", str(corpus), "--streaming",
                             "--out", str(tmp_path / "out"), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error:") and sentence in result.stderr


def test_a_text_column_of_numbers_is_refused(tmp_path):
    from lstm_model.data import DataError, StreamingCorpus, load_corpus

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": 5}\n{"text": 7}\n')
    with pytest.raises(DataError, match="holds int values"):
        load_corpus(str(rows))
    with pytest.raises(DataError, match="holds int values"):
        StreamingCorpus(str(rows))


def test_an_existing_model_folder_is_not_replaced_without_overwrite(play_file, trained_dir, tmp_path):
    import shutil
    import stat

    folder = tmp_path / "model"
    shutil.copytree(trained_dir[0], folder, ignore=shutil.ignore_patterns(STATE_NAME))  # a model, not a run
    weights = (folder / "model.safetensors").read_bytes()
    with pytest.raises(TrainingStopped, match="already holds a model; choose another --out, or add --overwrite"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(folder), "--max-steps", "1"]))
    assert (folder / "model.safetensors").read_bytes() == weights
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(folder), "--max-steps", "1", "--overwrite"]))
    assert (folder / "model.safetensors").read_bytes() != weights
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "config.json", STATE_NAME, "int8.json"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o666 & ~umask, name


def test_weights_that_are_not_finite_are_never_saved(play_file, tmp_path, monkeypatch):
    import lstm_model.train as train_module

    out = tmp_path / "run"
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "2"]))
    saved = (out / "model.safetensors").read_bytes()
    original = train_module.Trainer.train_step

    def poisoning(self, x, y, m=None, r=None):  # a finite loss whose update breaks the weights
        value = original(self, x, y, m, r)
        with torch.no_grad():
            self.model.head.bias[0] = float("nan")
        return value

    monkeypatch.setattr(train_module.Trainer, "train_step", poisoning)
    with pytest.raises(TrainingStopped, match=r"NaN or infinite by step 3; nothing was saved, the last good checkpoint "
                                              r"\(step 2\)"):
        train(resolve_config(["--out", str(out), "--resume", "--max-steps", "4", "--checkpoint-every", "1", "--quiet"]))
    assert (out / "model.safetensors").read_bytes() == saved


def test_awd_regularisation_trains_the_model_s_own_weights(small_model):
    """lstm_model/regularize.py: in eval mode the model's own output; in training, weight drop
    really drops hidden-to-hidden weights (all of them dropped = W_hh zero) and the gradient
    reaches them."""
    from lstm_model.regularize import Regularized

    ids = torch.randint(0, small_model.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    wrapped = Regularized(small_model, weight_drop=0.5, locked_dropout=0.3, embed_dropout=0.1).eval()
    torch.testing.assert_close(wrapped(ids)[0], small_model(ids)[0])
    assert [n for n, _ in wrapped.named_parameters()] == ["model." + n for n, _ in small_model.named_parameters()]

    all_dropped = Regularized(small_model, weight_drop=1 - 1e-7).train()
    out, _ = all_dropped(ids)
    saved = [getattr(small_model.lstm, f"weight_hh_l{k}").detach().clone() for k in range(small_model.num_layers)]
    with torch.no_grad():
        for k in range(small_model.num_layers):
            getattr(small_model.lstm, f"weight_hh_l{k}").zero_()
        small_model.eval()
        without, _ = small_model(ids)
        for k in range(small_model.num_layers):
            getattr(small_model.lstm, f"weight_hh_l{k}").copy_(saved[k])
    torch.testing.assert_close(out, without, atol=1e-5, rtol=1e-5)
    Regularized(small_model, weight_drop=0.5).train()(ids)[0].sum().backward()
    assert small_model.lstm.weight_hh_l0.grad.abs().sum() > 0


def test_a_run_with_awd_regularisation_saves_a_plain_model(play_file, tmp_path):
    from lstm_model import load_model
    from lstm_model.gates import trace
    from lstm_model.model import expected_shapes
    from lstm_model.train import resolve_config, train

    out = tmp_path / "awd"
    train(resolve_config(["--dataset", play_file, "--out", str(out), "--max-steps", "6", *SMALL,
                          "--weight-drop", "0.3", "--locked-dropout", "0.2", "--embed-dropout", "0.1"]))
    config = json.load(open(out / "config.json"))
    assert not {"weight_drop", "locked_dropout", "embed_dropout"} & set(config)
    model = load_model(str(out))
    assert set(model.state_dict()) == set(expected_shapes(config))
    ids = torch.tensor([model.vocab.encode("ANNA:\nThe sea.")])
    logits, _ = model(ids)
    tr = trace(model, "ANNA:\nThe sea.")
    torch.testing.assert_close(model.head(tr.hidden[-1]), logits[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(TrainingStopped, match="--weight-drop must be in"):
        resolve_config(["--dataset", play_file, "--weight-drop", "1.5"])


def test_a_time_limit_fits_the_schedule_to_the_steps_that_fit(play_file, tmp_path, monkeypatch):
    import itertools
    import types

    import lstm_model.train as train_module
    from lstm_model.train import read_state_metadata

    # A clock that moves a fixed amount per reading, so the run's length does not depend on the machine.
    ticks = itertools.count()
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.01,
                                                                     time=lambda: 0.0))
    out = tmp_path / "timed"
    run = train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--warmup-steps", "0",
                                        "--lr", "0.01", "--min-lr-ratio", "0.1", "--epochs", "1000",
                                        "--time-limit", "1"]))
    lrs = [json.loads(line)["lr"] for line in open(out / "metrics.jsonl") if "lr" in json.loads(line)]
    assert 5 < run.step < 200 and len(lrs) == run.step  # stopped by the clock, far before 1,000 epochs
    assert lrs[-1] == pytest.approx(0.001)  # the cosine ended at its floor: the schedule fitted the time
    assert lrs[len(lrs) // 2] > 0.002
    first = read_state_metadata(str(out / STATE_NAME))
    assert first["step"] == run.step and first["elapsed"] >= 1.0
    more = train(resolve_config(["--out", str(out), "--resume", "--quiet", "--time-limit", "2"]))
    assert more.step > run.step and read_state_metadata(str(out / STATE_NAME))["elapsed"] >= 2.0
    with pytest.raises(TrainingStopped, match="--time-limit must be a positive number of seconds"):
        resolve_config(["--dataset", play_file, "--time-limit", "0"])


def test_chat_markers_can_be_typed_with_escapes(play_file):
    c = resolve_config(["--dataset", play_file, "--turn-separator", "\\n", "--stop-sequence", "\\n\\n"])
    assert (c.turn_separator, c.stop_sequence) == ("\n", "\n\n")
    assert resolve_config(["--dataset", play_file, "--turn-separator", "a\\\\nb"]).turn_separator == "a\\nb"


def test_a_run_can_start_from_a_model_s_weights(play_file, trained_dir, tmp_path, capsys):
    """--init-from: the next stage of a curriculum starts from the last stage's weights, shape and
    vocabulary (here with a learning rate too small to move them: the weights stay the source's)."""
    source = load_model(trained_dir[0])
    out = tmp_path / "stage2"
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "2", "--lr", "1e-9",
                                  "--init-from", trained_dir[0]]))
    assert "training that shape" in capsys.readouterr().err  # SMALL asks for 24 units; the source has 48
    train(resolve_config(["--dataset", play_file, "--out", str(tmp_path / "stage2b"), "--max-steps", "1",
                          "--batch-size", "2", "--seq-len", "8", "--init-from", trained_dir[0], "--quiet"]))
    assert "training that shape" not in capsys.readouterr().err  # no shape asked for: nothing to note
    model = load_model(str(out))
    assert (model.hidden_size, model.embed_dim, model.vocab.chars) == (48, 16, source.vocab.chars)
    card = (out / "README.md").read_text()  # the card's training settings give the shape trained, not the flags'
    assert '"hidden_size": 48' in card and '"embed_dim": 16' in card
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, atol=1e-5, rtol=0)
    with pytest.raises(TrainingStopped, match="^--init-from: "):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "x"), "--max-steps", "2",
                                      "--init-from", str(tmp_path / "no-such-model")]))


def test_a_curriculum_stage_can_grow_the_vocabulary(play_file, trained_dir, tmp_path, capsys):
    """--init-from with a --vocab-from that holds every character of the model's and more (the next
    stage meets new names): known characters keep their rows wherever they now stand, new ones
    start untrained; a --vocab-from that lacks some of the model's characters is refused."""
    from lstm_model.model import CharLSTM

    source = load_model(trained_dir[0])
    wider_chars = ["@"] + source.vocab.chars[::-1] + ["~"]  # other positions, two new characters
    CharLSTM(vocab=wider_chars, embed_dim=4, hidden_size=8).save_pretrained(tmp_path / "wider")
    out = tmp_path / "grown"
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(out), "--max-steps", "2", "--lr", "1e-9",
                                  "--init-from", trained_dir[0], "--vocab-from", str(tmp_path / "wider")]))
    assert "the vocabulary grows from" in capsys.readouterr().err
    model = load_model(str(out))
    assert model.vocab.chars == wider_chars and model.hidden_size == source.hidden_size
    for ch in source.vocab.chars:
        i, j = model.vocab.index[ch], source.vocab.index[ch]
        torch.testing.assert_close(model.embedding.weight[i], source.embedding.weight[j], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.head.weight[i], source.head.weight[j], atol=1e-5, rtol=0)
    for name, tensor in source.lstm.state_dict().items():
        torch.testing.assert_close(model.lstm.state_dict()[name], tensor, atol=1e-5, rtol=0)
    lowest = source.head.bias.min().item()
    assert model.head.bias[model.vocab.index["@"]].item() == pytest.approx(lowest, abs=1e-5)
    assert model.head.bias[model.vocab.index["~"]].item() == pytest.approx(lowest, abs=1e-5)
    CharLSTM(vocab=source.vocab.chars[1:], embed_dim=4, hidden_size=8).save_pretrained(tmp_path / "narrower")
    with pytest.raises(TrainingStopped, match="lacks 1 of the characters the --init-from model knows"):
        train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "y"), "--max-steps", "2",
                                      "--init-from", trained_dir[0], "--vocab-from", str(tmp_path / "narrower")]))


def test_characters_a_borrowed_vocabulary_lacks_are_reported_as_skipped(play_file, tmp_path, capsys):
    """--vocab-from a model that lacks a character of the training text: training goes on without it
    (the unknown-character rule) and says which characters, and how many, are never trained on."""
    from lstm_model.model import CharLSTM

    text = open(play_file, encoding="utf-8").read()
    chars = sorted(set(text) - {"e"})
    CharLSTM(vocab=chars, embed_dim=4, hidden_size=8).save_pretrained(tmp_path / "no-e")
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "m"), "--max-steps", "1",
                                  "--vocab-from", str(tmp_path / "no-e")]))
    err = capsys.readouterr().err
    found = re.search(r"note: ([\d,]+) characters of the training text are not in the model's vocabulary and are "
                      r"skipped \('e' x ([\d,]+)\)", err)
    assert found and found[1] == found[2] and 0 < int(found[1].replace(",", "")) <= text.count("e")
    assert load_model(str(tmp_path / "m")).vocab.chars == chars
    train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "m2"), "--max-steps", "1"]))
    assert "are skipped" not in capsys.readouterr().err  # the data's own vocabulary: nothing to report


def test_widen_grows_a_trained_model_without_changing_what_it_computes(play_file, trained_dir, tmp_path, capsys):
    """--init-from M --widen H: each layer grows to H units; old units keep their weights, nothing
    flows out of the new ones yet, so the wider model's logits and states' old units equal the
    source's; training then gives the new units outgoing weights. Narrower or without --init-from
    is refused."""
    from lstm_model.train import widened

    source = load_model(trained_dir[0])
    wide = CharLSTM(vocab=source.vocab.chars, embed_dim=source.embed_dim, hidden_size=64)
    wide.load_state_dict(widened(wide, source))
    wide.eval()
    ids = torch.tensor([source.vocab.encode("ROMEO:\nWhat light through yonder window breaks?\n\n")])
    with torch.no_grad():
        want, (h0, c0) = source(ids)
        got, (h1, c1) = wide(ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(h1[:, :, :48], h0, atol=1e-5, rtol=0)
    torch.testing.assert_close(c1[:, :, :48], c0, atol=1e-5, rtol=0)
    assert h1[:, :, 48:].abs().max() > 0.01  # the new units run; their output is simply not read yet

    out = tmp_path / "wide"
    train(resolve_config(["--dataset", play_file, "--out", str(out), "--max-steps", "5", "--lr", "1e-2",
                          "--batch-size", "4", "--seq-len", "16", "--dropout", "0", "--quiet",
                          "--init-from", trained_dir[0], "--widen", "64"]))
    assert "widening --init-from" in capsys.readouterr().err
    trained = load_model(str(out))
    assert trained.hidden_size == 64 and trained.embed_dim == source.embed_dim
    assert trained.head.weight[:, 48:].abs().max() > 0  # training reached the new units' outgoing weights
    assert trained.lstm.weight_hh_l0[:, 48:].abs().max() > 0
    for flags, match in ((["--init-from", trained_dir[0], "--widen", "32"], "narrower than the --init-from model's 48"),
                         (["--widen", "64"], "give --init-from too")):
        with pytest.raises(TrainingStopped, match=match):
            train(resolve_config(SMALL + ["--dataset", play_file, "--out", str(tmp_path / "n"), "--max-steps", "1"]
                                 + flags))


def test_widen_and_a_grown_vocabulary_together_keep_what_the_model_computes(trained_dir):
    """--widen with --vocab-from: the layers grow and the rows follow their characters at once."""
    from lstm_model.train import load_by_character

    source = load_model(trained_dir[0])
    chars = sorted(set(source.vocab.chars) | {"~", "|"})
    wide = CharLSTM(vocab=chars, embed_dim=source.embed_dim, hidden_size=64)
    load_by_character(wide, source)
    wide.eval()
    text = "ROMEO:\nWhat light through yonder window breaks?\n\n"
    with torch.no_grad():
        want, _ = source(torch.tensor([source.vocab.encode(text)]))
        got, _ = wide(torch.tensor([wide.vocab.encode(text)]))
    rows = [wide.vocab.index[ch] for ch in source.vocab.chars]
    torch.testing.assert_close(got[..., rows], want, atol=1e-5, rtol=0)


def cli(capsys, argv) -> tuple[int, str]:
    """`python -m lstm_model.train` run in this process: its status and the last line of its stderr,
    having checked that it printed no traceback."""
    from cli_run import run_main

    from lstm_model.train import main

    return run_main(main, argv, capsys)


@pytest.mark.parametrize("config, flags, sentence", [
    (None, ["--seed", "100000000000000000000000000000"], "error: --seed must be from 0 to 4,294,967,295."),
    (None, ["--push-to-hub", "not a repo"], "error: --push-to-hub must be a Hub repo id, user/name"),
    (None, ["--language", "x"], "error: --language must be a language code such as en, fr or pt-BR; got 'x'."),
    ("[1, 2]", [], "must hold one JSON object of settings under 1,000,000 characters"),
    ('{"batch_size": "64"}', [], ': batch_size must be a whole number, not "64".'),
    ('{"lr": true, "push_to_hub": 5}', [], "lr must be a number, not true; push_to_hub must be a string or null, not 5."),
    ('{"device": "tpu"}', [], "error: --device must be one of 'auto', 'cpu', 'cuda', 'mps'; got 'tpu'."),
    ("[" * 100_000 + "]" * 100_000, [], "give a JSON file of settings."),  # nested past the parser's recursion
    ("{" + " " * 1_000_001 + "}", [], "must hold one JSON object of settings under 1,000,000 characters"),
])
def test_bad_settings_end_in_one_sentence_and_status_2_before_anything_is_written(config, flags, sentence, play_file,
                                                                                  tmp_path, capsys):
    argv = ["--dataset", play_file, "--out", str(tmp_path / "run"), *flags]
    if config is not None:
        (tmp_path / "config.json").write_text(config)
        argv += ["--config", str(tmp_path / "config.json")]
    code, line = cli(capsys, argv)
    assert code == 2 and line.startswith("error: ") and sentence in line
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_config_file_is_read_with_bounded_memory(tmp_path, capsys):
    code, line = cli(capsys, ["--config", "/dev/zero", "--out", str(tmp_path / "run")])
    assert code == 2 and "--config /dev/zero must hold one JSON object" in line and not (tmp_path / "run").exists()


def test_every_setting_is_written_once_a_field_its_flag_and_its_check():
    import dataclasses

    from lstm_model.train_config import BadSettings, TrainConfig, build_parser

    flags = {a.dest: a for a in build_parser()._actions if a.dest not in ("help", "config")}
    assert set(flags) == TrainConfig.field_names()
    for f in dataclasses.fields(TrainConfig):
        assert flags[f.name].help == f.metadata["help"].replace("{default}", str(f.default))
        assert flags[f.name].default is None  # not given: the --config file's value or the field's default
    with pytest.raises(BadSettings, match="--batch-size must be at least 1"):
        TrainConfig(batch_size=0)  # the check runs wherever a config is made, not only on the command line


def test_a_config_file_s_true_stands_where_the_flag_is_not_given(tmp_path):
    from lstm_model.train_config import resolve_config

    (tmp_path / "c.json").write_text('{"quiet": true, "streaming": true}')
    config = resolve_config(["--config", str(tmp_path / "c.json")])
    assert config.quiet and config.streaming and not resolve_config([]).quiet
