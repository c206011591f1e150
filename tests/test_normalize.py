"""A chat model's `normalize`: how it reads a user's message, the same in training and in the chat;
and how sure it was of a short reply."""

import math

import pytest
import torch

from lstm_model.memory_tasks import render
from lstm_model.model import CharLSTM, CheckpointError, check_config
from lstm_model.session import ChatSession
from lstm_model.vocab import VocabError, normalize

VOCAB = list("\n .?',abcdefghijklmnopqrstuvwxyzIJMOKS")


def test_every_way_of_typing_a_sentence_is_one_input():
    typed = ["Where is John?", "where is john", "Where is John? ", "Where  is John?", "  WHERE is\tJohn?!",
             "Where is John ?", "where is john."]
    assert {normalize(t, "lower") for t in typed} == {"where is john"}
    assert normalize("Mary went to the kitchen.", "lower") == "mary went to the kitchen"
    assert normalize("Where is John?  ", "") == "Where is John?  "  # "" reads it as typed
    with pytest.raises(VocabError, match="Unknown normalize form"):
        normalize("x", "upper")


def test_the_config_keeps_the_form_and_refuses_an_unknown_one(tmp_path):
    model = CharLSTM(VOCAB, embed_dim=8, hidden_size=8, normalize="lower")
    model.save_pretrained(tmp_path)
    assert CharLSTM.from_pretrained(str(tmp_path)).normalize == "lower"
    assert "normalize" not in CharLSTM(VOCAB, embed_dim=8, hidden_size=8).config  # older configs: as typed
    with pytest.raises(CheckpointError, match="normalize"):
        check_config({**model.config, "normalize": "shout"})


def test_training_renders_user_messages_as_the_chat_reads_them():
    messages = [{"role": "user", "content": "Mary went to the Kitchen."}, {"role": "assistant", "content": "OK."},
                {"role": "user", "content": "Where is Mary?"}, {"role": "assistant", "content": "kitchen"}]
    text, mask = render(messages, "\n", "\n", "lower")
    assert text == "mary went to the kitchen\nOK.\nwhere is mary\nkitchen\n"  # replies as written
    assert sum(mask) == len("OK.\nkitchen\n")


def test_the_session_feeds_the_normal_form_and_the_transcript_keeps_what_was_typed():
    torch.manual_seed(0)
    model = CharLSTM(VOCAB, embed_dim=8, hidden_size=16, normalize="lower", turn_separator="\n", stop_sequence="\n")
    states = []
    for typed in ("Where is John?", "where  is john "):
        chat = ChatSession(model, greedy=True, max_new_chars=5, seed=1)
        "".join(chat.send(typed))
        turn = chat.turns[0]
        assert turn.user == typed and turn.fed == "where is john\n" and not turn.skipped
        states.append(turn.state_after_user)
    assert all(torch.equal(a, b) for a, b in zip(*states))  # one input, one state


def test_a_short_reply_carries_how_sure_the_model_was_of_it():
    torch.manual_seed(0)
    model = CharLSTM(VOCAB, embed_dim=8, hidden_size=16, turn_separator="\n", stop_sequence="a")
    chat = ChatSession(model, temperature=1.0, max_new_chars=40, seed=3)
    for _ in range(20):  # until a reply ends at its stop within 40 characters
        "".join(chat.send("where is john"))
        if chat.turns[-1].stopped_by == "stop":
            break
    turn = chat.turns[-1]
    assert turn.stopped_by == "stop"
    with torch.no_grad():
        state, log_p = turn.state_after_user, 0.0
        for char in turn.reply + turn.stop:  # the product of each character's probability, step by step
            probs = torch.softmax(model.logits_from_state(state)[0], -1)
            log_p += math.log(float(probs[model.vocab.index[char]]))
            _, state = model(torch.tensor([[model.vocab.index[char]]]), state)
    assert turn.measures["reply_probability"] == pytest.approx(math.exp(log_p), rel=1e-4)
    assert chat.memory_report()["turns"][-1]["reply_probability"] == turn.measures["reply_probability"]
    long = ChatSession(model, temperature=1.0, max_new_chars=3, stop="\x00", seed=3)
    "".join(long.send("where is john"))
    assert long.turns[0].measures["reply_probability"] is None  # cut by the length cap: no answer to rate
