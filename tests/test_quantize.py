import json
import os
import shutil
import threading

import pytest
import torch

"""Int8 generation steps: how close they follow fp32, the check that decides whether they serve
(lstm_model.evaluate.check_int8), training's int8.json and `python -m lstm_model.quantize`."""

from lstm_model.data import encode
from lstm_model.evaluate import check_int8, text_loss, whole_text_loss
from lstm_model.generate import stream
from lstm_model.hub import INT8_CHECK_FILE as CHECK_FILE
from lstm_model.hub import load_int8_check
from lstm_model.quantize import main
from lstm_model.serving import MAX_LOSS_RISE, Serving
from lstm_model.step import OrtStep, TorchStep


@pytest.fixture
def model(trained_model):
    return trained_model


def test_int8_steps_follow_the_fp32_steps(model, play_text):
    ids = torch.tensor(model.vocab.encode(play_text[:400]))
    fp32, int8 = TorchStep(model), OrtStep(model, int8=True)
    state_a = state_b = model.begin_state(1)
    agree = 0
    for i in ids[:-1]:
        logits_a, state_a = fp32.step(i.reshape(1), state_a)
        logits_b, state_b = int8.step(i.reshape(1), state_b)
        agree += int(logits_a.argmax() == logits_b.argmax())
        assert (logits_a - logits_b).abs().max() < 0.1 * logits_a.abs().max()
    assert agree >= 0.97 * (len(ids) - 1)
    assert not torch.equal(logits_a, logits_b)  # really a different (int8) computation


def test_the_step_reads_the_text_as_nn_lstm_does_in_the_one_loss_loop(model, play_text):
    ids = encode(model.vocab, play_text[:3000])
    stepped = text_loss(model, ids, step=OrtStep(model))
    assert stepped.count == ids.numel()
    assert stepped.mean == pytest.approx(whole_text_loss(model, ids), abs=1e-4)
    check = check_int8(model, ids, streams=4)
    assert check["characters"] == ids.numel() // 4 * 4 and check["streams"] == 4
    assert check["fp32_loss"] == pytest.approx(text_loss(model, ids[: check["characters"]].view(4, -1),
                                                         step=TorchStep(model)).mean, abs=1e-4)


def test_training_writes_the_int8_check_and_load_int8_check_reads_it(trained_dir, model):
    out, run = trained_dir
    with open(f"{out}/{CHECK_FILE}") as f:
        check = json.load(f)
    assert check["loss_rise"] == pytest.approx(check["int8_loss"] - check["fp32_loss"], abs=2e-6)
    assert check["ok"] == (check["loss_rise"] <= MAX_LOSS_RISE)
    assert abs(check["loss_rise"]) < 0.05 and check["characters"] > 1000
    assert load_int8_check(out) == check
    assert run.metrics["int8_step_loss"] == check["int8_loss"]
    with open(f"{out}/final_metrics.json") as f:
        assert json.load(f)["fp32_step_loss"] == check["fp32_loss"]


def test_int8_batched_sessions_get_the_text_they_would_get_alone(model):
    alone_serving = Serving(model, int8="on")
    batched = Serving(model, int8="on", batching=True)
    prompts = ["ANNA:\n", "BEN:\nThe sea is calm.\n\nCLEO:\n", "CLEO:\n", "ANNA:\nSing.\n\n"]
    alone = ["".join(stream(model, p, max_new_chars=120, temperature=0.9, top_k=8, seed=i, serving=alone_serving))
             for i, p in enumerate(prompts)]
    together = [None] * len(prompts)

    def run(i):
        together[i] = "".join(stream(model, prompts[i], max_new_chars=120, temperature=0.9, top_k=8, seed=i,
                                     serving=batched))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert together == alone
    assert batched.step().int8 and batched.decoder.steps < batched.decoder.rows  # the shared steps ran in int8


def test_check_int8_refuses_a_model_off_cpu(model, monkeypatch):
    monkeypatch.setattr("lstm_model.step.onnxruntime_available", lambda: False)
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
    assert check["streams"] == 8 and load_int8_check(str(folder)) == check
    assert main(["--model", str(tmp_path / "missing"), "--dataset", play_file]) == 1
    assert "error:" in capsys.readouterr().err


def test_an_int8_row_does_not_depend_on_the_rows_batched_with_it(model):
    torch.manual_seed(0)
    stepper = OrtStep(model, int8=True)
    h = torch.rand(2, 9, model.hidden_size) * 1.8 - 0.9
    c = torch.randn(2, 9, model.hidden_size)
    h[:, 0] *= 0.01  # a row with a much smaller range than the others
    ids = torch.randint(0, model.vocab_size, (9,))
    batched_logits, (batched_h, _) = stepper.step(ids, (h, c))
    for i in (0, 4, 8):
        logits, (hi, _) = stepper.step(ids[i : i + 1], (h[:, i : i + 1], c[:, i : i + 1]))
        assert torch.equal(logits[0], batched_logits[i]) and torch.equal(hi[:, 0], batched_h[:, i])


def test_a_chat_model_s_int8_check_scores_only_what_the_mask_marks(model, play_text):
    from lstm_model.data import encode
    from lstm_model.step import make_step

    ids = encode(model.vocab, play_text[:1200])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[::3] = True  # every third character, as a chat's replies are some of its characters
    check = check_int8(model, ids, streams=4, mask=mask)
    pieces, marked = ids[:1200].view(4, 300), mask.view(4, 300)
    expected = text_loss(model, pieces, step=make_step(model, "onnxruntime", False), mask=marked).mean
    assert check["fp32_loss"] == pytest.approx(expected, abs=1e-6) and check["scored"].startswith("400 marked")
    assert check["fp32_loss"] != pytest.approx(check_int8(model, ids, streams=4)["fp32_loss"], abs=1e-4)


def run_cli(capsys, argv) -> tuple[int, str]:
    """`python -m lstm_model.quantize` in this process: its status and the last line of its stderr,
    having checked that it printed no traceback."""
    from cli_run import run_main

    return run_main(main, argv, capsys)


@pytest.mark.parametrize("flags, sentence", [
    (["--streams", "0"], "argument --streams: must be from 1 to 4,096 (got 0)"),
    (["--streams", "-4"], "argument --streams: must be from 1 to 4,096 (got -4)"),
    (["--streams", "1000000"], "argument --streams: must be from 1 to 4,096 (got 1,000,000)"),
    (["--streams", "many"], "argument --streams: expected a whole number, got 'many'"),
    (["--val-fraction", "nan"], "argument --val-fraction: must be between 0 and 1, both excluded (got nan)"),
    (["--val-fraction", "1"], "argument --val-fraction: must be between 0 and 1, both excluded (got 1)"),
    (["--val-fraction", "-0.5"], "argument --val-fraction: must be between 0 and 1, both excluded (got -0.5)"),
    (["--model", "someone/model", "--write"], "--write needs a local model folder; someone/model is not one"),
])
def test_bad_arguments_are_refused_before_the_model_is_read(flags, sentence, play_file, capsys, monkeypatch):
    monkeypatch.setattr("lstm_model.quantize.load_model", lambda *args, **kwargs: pytest.fail("read the model"))
    code, line = run_cli(capsys, ["--dataset", play_file, *flags])
    assert code == 2 and line.startswith("python -m lstm_model.quantize: error: ") and sentence in line


def test_a_folder_it_cannot_write_is_found_before_the_measurement_and_left_as_it_was(trained_dir, play_file, tmp_path,
                                                                                      capsys, monkeypatch):
    import errno

    folder = tmp_path / "model"
    shutil.copytree(trained_dir[0], folder)
    before = (folder / CHECK_FILE).read_bytes()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:  # the folder refuses new files: refused before the model is read
        patch.setattr("lstm_model.quantize.atomic_path", denied)
        patch.setattr("lstm_model.quantize.load_model", lambda *args, **kwargs: pytest.fail("read the model"))
        code, line = run_cli(capsys, ["--model", str(folder), "--dataset", play_file, "--write"])
    assert code == 1 and line == (f"error: cannot write {CHECK_FILE} into {folder} (Permission denied); make the "
                                  "folder writable or leave --write out.")
    monkeypatch.setattr("lstm_model.quantize.write_json", denied)  # the disk fails at the end: one sentence too
    code, line = run_cli(capsys, ["--model", str(folder), "--dataset", play_file, "--streams", "8", "--write"])
    assert code == 1 and line == (f"error: could not write {folder / CHECK_FILE} (Permission denied); the "
                                  "measurement is above.")
    assert (folder / CHECK_FILE).read_bytes() == before and sorted(os.listdir(folder)) == sorted(
        os.listdir(trained_dir[0]))
