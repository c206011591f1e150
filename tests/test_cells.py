"""A GRU and a plain RNN beside the LSTM: the model's `cell` (config, Hub format, card, training),
the exact traces of each cell against nn.GRU and nn.RNN, every step engine (torch, ONNX Runtime
fp32 and int8), the batching decoder and the chat session, for every cell."""

import json
import os
import shutil
import threading

import pytest
import torch
import yaml

from lstm_model import CharLSTM, load_model
from lstm_model.gates import CELL_QUANTITIES, QUANTITIES, join_traces, trace, units_following
from lstm_model.generate import generate, stream
from lstm_model.model import CELLS, CheckpointError, parameter_count
from lstm_model.serving import Serving
from lstm_model.session import ChatSession, is_fresh
from lstm_model.step import OrtStep, TorchStep, make_step, step_graph
from lstm_model.text_stream import PROMPT_STEP_CHARS
from test_batching import alone_and_together
from test_gates import no_onednn

NEW_CELLS = ["gru", "rnn"]
# The last prompt is longer than the decoder's READ_FIRST_CHARS: the rest of it is read in slices.
PROMPTS = ["ANNA:\n", "BEN:\nThe sea is calm.\n\nCLEO:\n", "CLEO:\n", "ANNA:\nSing.\n\n", "BEN:\n",
           "ANNA:\n" + "The sea is calm and the moon is bright. " * 9 + "\n\nBEN:\n"]


def run(reply):
    return "".join(reply)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)



def small(play_text, cell, hidden=16, seed=0):
    torch.manual_seed(seed)
    return CharLSTM(vocab=sorted(set(play_text)), embed_dim=8, hidden_size=hidden, num_layers=2, dropout=0.0,
                    cell=cell).eval()


@pytest.fixture(scope="module", params=NEW_CELLS)
def cell_dir(request, tmp_path_factory, play_file):
    """A GRU or an RNN trained by the training CLI (--cell) on the synthetic play."""
    from lstm_model.train import resolve_config, train

    out = tmp_path_factory.mktemp(f"trained-{request.param}") / "model"
    train(resolve_config([
        "--cell", request.param, "--dataset", play_file, "--out", str(out), "--hidden-size", "32", "--embed-dim", "16",
        "--batch-size", "16", "--seq-len", "64", "--max-steps", "80", "--lr", "1e-2", "--warmup-steps", "10",
        "--eval-every", "40", "--eval-batches", "2", "--dropout", "0.0", "--quiet", "--sample-chars", "40",
    ]))
    return str(out)


@pytest.fixture(scope="module")
def cell_model(cell_dir):
    return load_model(cell_dir)


# -- the model: config, format, card ------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_has_its_module_state_and_parameter_count(play_text, cell):
    model = small(play_text, cell)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    assert model.cell == cell and type(model.recurrent) is module and getattr(model, cell) is model.recurrent
    if cell == "rnn":
        assert model.recurrent.nonlinearity == "tanh"
    assert model.num_parameters() == parameter_count(model.vocab_size, 8, 16, 2, cell)
    assert all(name.startswith(("embedding.", "head.", cell + ".")) for name in model.state_dict())
    h, c = model.begin_state(3)
    assert h.shape == (2, 3, 16) and c.shape == (2, 3, 16 if cell == "lstm" else 0)
    assert is_fresh((h, c))
    ids = torch.tensor([model.vocab.encode("ANNA:\nThe sea.\n\n")] * 3)
    with torch.no_grad():
        logits, (h2, c2) = model(ids)
    assert logits.shape == (3, ids.shape[1], model.vocab_size) and h2.shape == h.shape and c2.shape == c.shape
    assert not is_fresh((h2, c2))


def test_a_config_without_cell_loads_as_the_lstm_it_always_was(play_text, tmp_path):
    model = small(play_text, "lstm")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["cell"] == "lstm"
    del config["cell"]  # as every config.json written before the setting
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_model(str(tmp_path))
    assert loaded.cell == "lstm" and same_weights(loaded, model)
    bundled = load_model()  # a bundled model's config has no cell
    assert bundled.cell == "lstm" and isinstance(bundled.lstm, torch.nn.LSTM)


@pytest.mark.parametrize("cell", NEW_CELLS)
def test_each_cell_round_trips_through_its_folder_and_its_card_names_it(play_text, tmp_path, cell):
    model = small(play_text, cell)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["cell"] == cell
    for loaded in (load_model(str(tmp_path)), CharLSTM.from_pretrained(str(tmp_path))):
        assert loaded.cell == cell and same_weights(loaded, model)
    card = (tmp_path / "README.md").read_text()
    name = {"gru": "GRU", "rnn": "RNN"}[cell]
    assert f"2 {name} layers of 16 units" in card and f"character-level {name} language model" in card
    assert "LSTM layers" not in card
    tags = yaml.safe_load(card[4 : card.index("\n---", 4)])["tags"]
    assert cell in tags and "lstm" not in tags


def test_a_checkpoint_whose_weights_are_another_cell_s_is_refused_before_loading(play_text, tmp_path):
    small(play_text, "lstm").save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(dict(config, cell="gru")))
    with pytest.raises(Exception, match="lacks the tensors"):
        CharLSTM.from_pretrained(str(tmp_path))
    config_path.write_text(json.dumps(dict(config, cell="transformer")))
    with pytest.raises(CheckpointError, match="cell='transformer'"):
        CharLSTM.from_pretrained(str(tmp_path))


def test_the_shapes_a_gru_checkpoint_must_have_are_checked_from_the_header(play_text, tmp_path):
    from safetensors.torch import save_file

    model = small(play_text, "gru")
    model.save_pretrained(tmp_path)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    tensors["gru.weight_hh_l1"] = torch.zeros(4 * 16, 16)  # an LSTM's four blocks where a GRU has three
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"gru.weight_hh_l1 has shape \(64, 16\), but config.json implies \(48, 16\)"):
        CharLSTM.from_pretrained(str(tmp_path))


# -- exact traces ---------------------------------------------------------------------------------


def assert_close_relative(a, b):
    bound = 1e-5 * torch.clamp(b.abs(), min=1.0)
    worst = ((a - b).abs() / bound).max().item()
    assert worst <= 1.0, f"worst error is {worst:.2f}x the bound"


@pytest.mark.parametrize("start", ["zero", "nonzero"])
@pytest.mark.parametrize("cell", NEW_CELLS)
def test_the_trace_equals_the_cell_s_own_module_over_1000_characters(play_text, cell, start):
    model = small(play_text, cell, hidden=32, seed=1)
    text = play_text[:1000]
    state = None
    if start == "nonzero":
        state = (torch.rand(2, 1, 32) * 2 - 1, torch.zeros(2, 1, 0))
    tr = trace(model, text, state)
    assert tr.kind == cell and tr.quantities == CELL_QUANTITIES[cell]
    assert all(tr.get(name).shape == (2, len(text), 32) for name in tr.quantities)
    h0 = (state or model.begin_state(1))[0]
    module = {"gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    with torch.no_grad(), no_onednn():
        x = model.embedding(torch.tensor([model.vocab.encode(text)]))
        inputs = x
        for layer in range(2):  # each layer by the module's own single-layer computation, one step at a time
            single = module(inputs.shape[-1], 32, batch_first=True)
            single.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in model.recurrent.state_dict().items()
                                    if k.endswith(f"_l{layer}")})
            h, hs = h0[layer : layer + 1], []
            for t in range(len(text)):
                out, h = single(inputs[:, t : t + 1], h)
                hs.append(out[0, 0])
            assert_close_relative(tr.hidden[layer], torch.stack(hs))
            inputs = torch.stack(hs)[None]
        out, h_final = model.recurrent(x, h0)
    assert_close_relative(tr.hidden[-1], out[0])
    assert_close_relative(tr.state[0], h_final)
    assert tr.state[1].shape == (2, 1, 0)
    if cell == "gru":  # the gates are the equations' own: H = (1 - Z) N + Z H_prev, N from R
        h_prev = torch.cat([h0[:, None, 0], tr.hidden[:, :-1]], dim=1)
        torch.testing.assert_close(tr.hidden, (1 - tr.update) * tr.candidate + tr.update * h_prev)
        w_ih, b_ih = model.gru.weight_ih_l0, model.gru.bias_ih_l0
        w_hh, b_hh = model.gru.weight_hh_l0, model.gru.bias_hh_l0
        with torch.no_grad():
            gx = torch.nn.functional.linear(x[0], w_ih, b_ih)
            gh = torch.nn.functional.linear(h_prev[0], w_hh, b_hh)  # the reset gate multiplies this, bias included
            n = torch.tanh(gx[:, 64:] + tr.reset[0] * gh[:, 64:])
        torch.testing.assert_close(tr.candidate[0], n, atol=1e-5, rtol=0)
        assert 0 < float(tr.update.min()) and float(tr.update.max()) < 1 and 0 < float(tr.reset.min())


def test_each_trace_holds_its_cell_s_quantities_and_the_lstm_s_is_unchanged(play_text):
    text = "ANNA:\nThe sea.\n"
    lstm = trace(small(play_text, "lstm"), text)
    assert lstm.quantities == QUANTITIES and lstm.memory == "cell" and lstm.kind == "lstm"
    assert lstm.forget.shape == lstm.cell.shape == (2, len(text), 16)
    gru = trace(small(play_text, "gru"), text)
    assert gru.quantities == ("hidden", "update", "reset", "candidate") and gru.memory == "hidden"
    rnn = trace(small(play_text, "rnn"), text)
    assert rnn.quantities == ("hidden",) and rnn.memory == "hidden"
    with pytest.raises(AttributeError, match="gru trace has no 'forget'"):
        gru.forget  # noqa: B018
    with pytest.raises(ValueError, match="quantity must be one of"):
        rnn.get("cell")
    joined = join_traces([gru, gru])
    assert joined.kind == "gru" and joined.text == text * 2 and joined.tail(3).update.shape == (2, 3, 16)
    assert joined.nbytes() == 2 * gru.nbytes()
    pattern = [float(i % 3) for i in range(len(rnn.text))]
    assert len(units_following(rnn, pattern, k=3)) == 3  # on H, the RNN's memory


# -- steps, int8 and serving ----------------------------------------------------------------------


def random_state(model, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(model.num_layers, batch, model.hidden_size, generator=g) * 2 - 1
    ids = torch.randint(0, model.vocab_size, (batch,), generator=g)
    return ids, (h, model.begin_state(batch)[1])


def test_the_steps_compute_the_module_and_the_graphs_compute_the_torch_step(cell_model):
    model = cell_model
    ids = torch.tensor(model.vocab.encode("ANNA:\nThe moon is bright.\n\nBEN:\n"))
    step, state = TorchStep(model), model.begin_state(1)
    for t in range(len(ids)):
        logits, state = step.step(ids[t : t + 1], state)
    with torch.no_grad():
        out, h = model.recurrent(model.embedding(ids[None]))
    torch.testing.assert_close(logits[0], model.head(out[0, -1]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state[0], h, atol=1e-5, rtol=1e-5)
    assert state[1].shape == (model.num_layers, 1, 0)

    ids, state = random_state(model, 5)
    want_logits, (want_h, want_c) = TorchStep(model).step(ids, state)
    logits, (h, c) = OrtStep(model).step(ids, state)
    assert torch.allclose(logits, want_logits, atol=1e-5) and torch.allclose(h, want_h, atol=1e-6)
    assert c.shape == want_c.shape == (model.num_layers, 5, 0)
    graph = step_graph(TorchStep(model), model.vocab_size)
    assert [i.name for i in graph.graph.input] == ["ids", "h"]  # no cell state to carry


def test_an_int8_row_is_the_same_alone_or_in_a_batch_and_follows_fp32(cell_model, play_text):
    model = cell_model
    ids, (h, c) = random_state(model, 32, seed=3)
    logits, (h2, _) = OrtStep(model, int8=True, threads=2).step(ids, (h, c))
    one = OrtStep(model, int8=True, threads=1)
    for row in (0, 13, 31):
        alone, (h1, c1) = one.step(ids[row : row + 1], (h[:, row : row + 1], c[:, row : row + 1]))
        torch.testing.assert_close(logits[row : row + 1], alone, atol=1e-6, rtol=0)
        torch.testing.assert_close(h2[:, row : row + 1], h1, atol=1e-6, rtol=0)
    text = torch.tensor(model.vocab.encode(play_text[:300]))
    fp32, int8 = TorchStep(model), OrtStep(model, int8=True)
    state_a = state_b = model.begin_state(1)
    agree = 0
    for i in text[:-1]:
        logits_a, state_a = fp32.step(i.reshape(1), state_a)
        logits_b, state_b = int8.step(i.reshape(1), state_b)
        agree += int(logits_a.argmax() == logits_b.argmax())
    assert agree >= 0.9 * (len(text) - 1) and not torch.equal(logits_a, logits_b)


def test_training_measured_int8_and_serving_follows_the_measurement(cell_dir, cell_model):
    from lstm_model.hub import load_int8_check

    check = load_int8_check(cell_dir)
    assert check["loss_rise"] == pytest.approx(check["int8_loss"] - check["fp32_loss"], abs=2e-6)
    serving = Serving(cell_model, int8="auto", int8_check=check)
    assert serving.int8 == check["ok"]
    assert Serving(cell_model, int8="on").step().int8
    assert type(make_step(cell_model, "torch")) is TorchStep and isinstance(make_step(cell_model), OrtStep)


@pytest.mark.parametrize("int8", ["off", "on"])
@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_batched_replies_are_the_replies_alone(cell_model, engine, int8):
    if engine == "torch" and int8 == "on":
        pytest.skip("int8 steps run on ONNX Runtime")
    model = cell_model
    alone_serving = Serving(model, engine=engine, int8=int8)
    batched = Serving(model, engine=engine, int8=int8, batching=True)

    # In int8 only prompts that a reply alone also reads through the (int8) step: a longer one it
    # reads through the fp32 module, the decoder through the step.
    prompts = PROMPTS if int8 == "off" else [p for p in PROMPTS if len(p) <= PROMPT_STEP_CHARS]
    alone, together = alone_and_together(model, prompts, batched, alone_serving)
    for (a, state_a, why_a), (b, state_b, why_b) in zip(alone, together):
        assert a == b and why_a == why_b
        torch.testing.assert_close(state_a[0], state_b[0], atol=1e-4, rtol=1e-4)
        assert state_b[1].shape == (model.num_layers, 1, 0)
    decoder = batched.decoder  # the full steps really were shared: fewer of them than characters written
    assert decoder.steps - decoder.read_steps < decoder.rows
    batched.close(wait=True)


def test_generate_and_stream_carry_the_state(cell_model):
    model = cell_model
    text, state = generate(model, "ANNA:\n", max_new_chars=50, seed=1)
    assert len(text) <= 50 and state[0].shape == (model.num_layers, 1, model.hidden_size)
    again, _ = generate(model, "ANNA:\n", max_new_chars=50, seed=1)
    assert again == text
    long_prompt = "BEN:\nThe sea is calm and the moon is bright so sing to me of home.\n\n"  # read by the module
    s = stream(model, long_prompt, state=state, max_new_chars=30, seed=2)
    pieces = list(s)
    assert "".join(pieces) == s.text and s.stopped_by in ("stop", "length") and s.state[1].shape[-1] == 0


# -- the chat session -----------------------------------------------------------------------------


def test_a_chat_carries_the_memory_and_undo_fresh_reply_benefits_and_traces_work(cell_model):
    model = cell_model
    session = ChatSession(model, seed=5, max_new_chars=60)
    run(session.send("ANNA:\nThe sea is calm."))
    after_one = tuple(t.clone() for t in session.state)
    assert not is_fresh(after_one) and after_one[1].shape == (model.num_layers, 1, 0)
    run(session.send("BEN:\nSing to me of home."))
    first, second = session.turns
    assert torch.equal(second.state_before[0], first.state_after[0])  # the memory was carried
    # The state after the turn is the module's over everything read from the state before it.
    ids = torch.tensor([model.vocab.encode(session.turn_text(second))])
    with torch.no_grad():
        _, h = model.recurrent(model.embedding(ids), second.state_before[0])
    torch.testing.assert_close(session.state[0], h, atol=1e-5, rtol=1e-5)

    report = json.loads(json.dumps(session.memory_report()))
    assert report["cell"] == model.cell
    for t in report["turns"]:
        assert t["c_norm"] is None and t["c_change"] is None and len(t["h_norm"]) == model.num_layers
        assert t["loss_carried_bpc"] is not None and t["loss_fresh_bpc"] is not None
    assert report["turns"][0]["memory_benefit_bpc"] == 0.0  # the first turn started fresh

    fresh = session.fresh_reply(1)
    alone = ChatSession(model, seed=second.sampling.seed, max_new_chars=60)
    run(alone.send("BEN:\nSing to me of home."))
    assert fresh == alone.turns[0].reply and session.fresh_reply(0) == first.reply

    benefits = session.char_benefits(1)
    assert [ch for ch, _ in benefits["read"]] == list(second.fed) and second.measures["reply_benefit_bpc"] is not None
    assert benefits["read"] and all(isinstance(bits, float) for _, bits in benefits["read"] + benefits["written"])

    recent = session.trace_recent(10_000)
    scratch = join_traces([trace(model, session.turn_text(t), t.state_before) for t in session.turns])
    assert recent.kind == model.cell and recent.text == scratch.text
    for name in recent.quantities:
        assert torch.allclose(recent.get(name), scratch.get(name), atol=1e-6)
    assert session.cache_bytes() == recent.nbytes()

    assert session.undo()
    assert torch.equal(session.state[0], after_one[0]) and torch.equal(session.state[1], after_one[1])
    assert session.undo() and is_fresh(session.state) and not session.undo()


def test_batched_sessions_of_every_cell_stay_reproducible(cell_model):
    batched = Serving(cell_model, batching=True)
    solo = ChatSession(cell_model, seed=7, max_new_chars=60)
    expected = [run(solo.send(m)) for m in ("ANNA:\nThe moon.", "BEN:\nThe sea.")]
    shared = [ChatSession(cell_model, seed=7, max_new_chars=60, serving=batched) for _ in range(3)]
    replies = [None] * 3

    def talk(i):
        replies[i] = [run(shared[i].send(m)) for m in ("ANNA:\nThe moon.", "BEN:\nThe sea.")]

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert replies == [expected] * 3
    alone = ChatSession(cell_model, seed=shared[0].turns[1].sampling.seed, max_new_chars=60)
    run(alone.send("BEN:\nThe sea."))
    assert shared[0].fresh_reply(1) == alone.turns[0].reply  # the fresh reply, batched too
    batched.close(wait=True)


def test_the_memory_views_show_each_cell_s_own_quantities(cell_model):
    from lstm_model import views

    session = ChatSession(cell_model, seed=3, max_new_chars=40)
    run(session.send("ANNA:\nThe sea."))
    run(session.send("BEN:\nThe moon."))
    recent = session.trace_recent(1500)
    meters = cell_model.num_layers if cell_model.cell == "gru" else 0  # mean Z per layer; a plain RNN has no gate
    for quantity in (None, "cell", "forget", *recent.quantities):  # an LSTM's name falls back to the cell's memory
        page = views.heatmap_html(recent, quantity)
        assert page.count('<tr class="hm-meter">') == meters
    assert "hidden state H" in views.heatmap_html(recent, "cell")
    if cell_model.cell == "gru":
        assert "update gate Z" in views.heatmap_html(recent, "update") and "mean Z" in views.heatmap_html(recent)
    assert "Unit 3" in views.unit_html(recent, session.recent_roles(1500), 3)
    figure = views.timeline_figure(session.memory_report())
    assert len(figure.axes) == 2  # |H| and the memory benefit: no |C| to draw
    assert "hidden state H" in views.explanation(cell_model.cell)


# -- the Hub, training ---------------------------------------------------------------------------


def test_a_pushed_model_of_each_cell_loads_by_repo_id(cell_dir, cell_model, play_text, hub):
    from lstm_model.hub import push_folder

    repo = f"standin-user/char-{cell_model.cell}"
    push_folder(cell_dir, repo)
    loaded = load_model(repo)
    assert loaded.cell == cell_model.cell and same_weights(loaded, cell_model)
    assert f"{cell_model.cell.upper()} layers" in hub.files(repo)["README.md"].decode()
    other = small(play_text, "rnn" if cell_model.cell == "gru" else "gru")
    other.push_to_hub(f"standin-user/small-{other.cell}")
    assert same_weights(CharLSTM.from_pretrained(f"standin-user/small-{other.cell}"), other)


def test_the_cell_is_a_training_flag_and_a_saved_setting(cell_dir, cell_model, tmp_path):
    from lstm_model.train_config import BadSettings, build_parser, resolve_config

    assert "--cell" in build_parser().format_help()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--cell", "transformer"])
    with pytest.raises(BadSettings, match="--cell must be one of"):
        from lstm_model.train_config import TrainConfig

        TrainConfig(cell="transformer")
    assert resolve_config([]).cell == "lstm"
    saved = json.load(open(os.path.join(cell_dir, "train_config.json")))
    assert saved["cell"] == cell_model.cell
    assert f"{cell_model.cell.upper()} layers" in open(os.path.join(cell_dir, "README.md")).read()
    from lstm_model.cards import refresh_metadata

    folder = tmp_path / "model"
    shutil.copytree(cell_dir, folder)
    assert cell_model.cell in refresh_metadata(folder).data.tags  # the publish CLI's `card` keeps the cell's tag


def test_widen_resume_and_weight_drop_work_for_each_cell(cell_dir, cell_model, play_file, tmp_path):
    from lstm_model.regularize import Regularized
    from lstm_model.train import resolve_config, train, widened

    source = cell_model
    wide = CharLSTM(vocab=source.vocab.chars, embed_dim=source.embed_dim, hidden_size=48, cell=source.cell)
    wide.load_state_dict(widened(wide, source))
    wide.eval()
    ids = torch.tensor([source.vocab.encode("ANNA:\nThe sea is calm.\n\n")])
    with torch.no_grad():
        want, (h0, _) = source(ids)
        got, (h1, _) = wide(ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(h1[:, :, :32], h0, atol=1e-5, rtol=0)

    # --init-from keeps the source's cell whatever --cell says; a run resumes with its zero-unit c carried.
    flags = ["--dataset", play_file, "--out", str(tmp_path / "run"), "--batch-size", "4", "--seq-len", "16",
             "--dropout", "0", "--quiet", "--sample-chars", "10", "--eval-every", "2", "--eval-batches", "1",
             "--init-from", cell_dir, "--weight-drop", "0.2"]
    train(resolve_config(flags + ["--max-steps", "2"]))
    assert load_model(str(tmp_path / "run")).cell == source.cell
    resumed = train(resolve_config(flags + ["--max-steps", "4", "--resume"]))
    assert resumed.step == 4 and load_model(str(tmp_path / "run")).cell == source.cell

    net = Regularized(wide.train(), weight_drop=0.5)
    logits, (h, c) = net(ids)
    logits.sum().backward()
    assert wide.recurrent.weight_hh_l0.grad.abs().sum() > 0 and c.shape[-1] == 0
