import json
import shutil
import threading

import pytest
import torch

from lstm_model import load_model
from lstm_model.batching import Decoder
from lstm_model.data import encode
from lstm_model.generate import Stepper, stream
from lstm_model.onnx_step import OrtStepper
from lstm_model.session import ChatSession
from lstm_model.quantize import CHECK_FILE, MAX_LOSS_RISE, check_int8, main, resolve_int8, step_loss
from lstm_model.train import evaluate_text


@pytest.fixture
def model(trained_dir):
    return load_model(trained_dir[0])  # a fresh copy: these tests switch int8 on and off


def test_int8_steps_follow_the_fp32_steps(model, play_text):
    ids = torch.tensor(model.vocab.encode(play_text[:400]))
    fp32, int8 = Stepper(model), OrtStepper(model, int8=True)
    state_a = state_b = model.begin_state(1)
    agree = 0
    for i in ids[:-1]:
        logits_a, state_a = fp32.step(i.reshape(1), state_a)
        logits_b, state_b = int8.step(i.reshape(1), state_b)
        agree += int(logits_a.argmax() == logits_b.argmax())
        assert (logits_a - logits_b).abs().max() < 0.1 * logits_a.abs().max()
    assert agree >= 0.97 * (len(ids) - 1)
    assert not torch.equal(logits_a, logits_b)  # really a different (int8) computation


def test_step_loss_reads_the_text_as_evaluation_does(model, play_text):
    ids = encode(model.vocab, play_text[:3000])
    loss, count = step_loss(model, ids, int8=False, streams=1)
    assert count == ids.numel()
    assert loss == pytest.approx(evaluate_text(model, ids), abs=1e-4)


def test_training_writes_the_int8_check_and_load_model_reads_it(trained_dir, model):
    out, run = trained_dir
    with open(f"{out}/{CHECK_FILE}") as f:
        check = json.load(f)
    assert check["loss_rise"] == pytest.approx(check["int8_loss"] - check["fp32_loss"], abs=2e-6)
    assert check["ok"] == (check["loss_rise"] <= MAX_LOSS_RISE)
    assert abs(check["loss_rise"]) < 0.05 and check["characters"] > 1000
    assert model.int8_check == check
    assert run.metrics["int8_step_loss"] == check["int8_loss"]
    with open(f"{out}/final_metrics.json") as f:
        assert json.load(f)["fp32_step_loss"] == check["fp32_loss"]


def test_auto_serves_int8_only_where_the_measured_rise_is_small(model):
    model.int8_check = {"loss_rise": 0.004, "ok": True}
    assert resolve_int8(model, "auto")[0] and model.serve_int8
    assert Stepper.for_model(model).int8
    model.int8_check = {"loss_rise": 0.02, "ok": False}
    on, why = resolve_int8(model, "auto")
    assert not on and not model.serve_int8 and "0.02" in why
    assert not Stepper.for_model(model).int8  # the cached stepper follows the switch
    model.int8_check = None
    assert not resolve_int8(model, "auto")[0]
    assert ChatSession(model).memory_report()["generation_steps"] == "fp32"
    assert resolve_int8(model, "on")[0]
    assert ChatSession(model).memory_report()["generation_steps"] == "int8"
    assert not resolve_int8(model, "off")[0]
    with pytest.raises(ValueError, match="auto, on, off"):
        resolve_int8(model, "fast")


def test_int8_batched_sessions_get_the_text_they_would_get_alone(model):
    model.serve_int8 = True
    prompts = ["ANNA:\n", "BEN:\nThe sea is calm.\n\nCLEO:\n", "CLEO:\n", "ANNA:\nSing.\n\n"]
    alone = ["".join(stream(model, p, max_new_chars=120, temperature=0.9, top_k=8, seed=i)) for i, p in enumerate(prompts)]
    decoder, together = Decoder(model), [None] * len(prompts)

    def run(i):
        together[i] = "".join(stream(model, prompts[i], max_new_chars=120, temperature=0.9, top_k=8, seed=i, decoder=decoder))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert together == alone
    assert Stepper.for_model(model).int8 and decoder.steps < decoder.rows  # the shared steps ran in int8


def test_check_int8_refuses_a_model_off_cpu(model, monkeypatch):
    monkeypatch.setattr("lstm_model.quantize.int8_available", lambda m: False)
    with pytest.raises(ValueError, match="CPU and onnxruntime"):
        check_int8(model, torch.tensor([1, 2, 3]))


def test_quantize_cli_measures_and_writes(trained_dir, play_file, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(trained_dir[0], folder)
    (folder / CHECK_FILE).unlink()
    assert main(["--model", str(folder), "--dataset", play_file, "--streams", "8", "--write"]) == 0
    out = capsys.readouterr().out
    assert "fp32 steps:" in out and "int8 steps:" in out and "rise" in out
    check = json.loads((folder / CHECK_FILE).read_text())
    assert check["streams"] == 8 and load_model(str(folder)).int8_check == check
    assert main(["--model", str(tmp_path / "missing"), "--dataset", play_file]) == 1
    assert "error:" in capsys.readouterr().err


def test_an_int8_row_does_not_depend_on_the_rows_batched_with_it(model):
    torch.manual_seed(0)
    stepper = OrtStepper(model, int8=True)
    h = torch.rand(2, 9, model.hidden_size) * 1.8 - 0.9
    c = torch.randn(2, 9, model.hidden_size)
    h[:, 0] *= 0.01  # a row with a much smaller range than the others
    ids = torch.randint(0, model.vocab_size, (9,))
    batched_logits, (batched_h, _) = stepper.step(ids, (h, c))
    for i in (0, 4, 8):
        logits, (hi, _) = stepper.step(ids[i : i + 1], (h[:, i : i + 1], c[:, i : i + 1]))
        assert torch.equal(logits[0], batched_logits[i]) and torch.equal(hi[:, 0], batched_h[:, i])
