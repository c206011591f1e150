"""Memory tasks in bAbI's forms as chat (lstm_model/memory_tasks.py)."""

import errno
import os
import random
import re

import pytest

from lstm_model.memory_tasks import ACK, COUNTS, OBJECTS, PEOPLE, build, distance_probe, from_babi_qa, render, story

MOVE = re.compile(r"^(\w+) (?:moved to|went to|journeyed to|travelled to|went back to) the (\w+)\.$")
GET = re.compile(r"^(\w+) (?:got|picked up|grabbed) the (\w+)\.$")
DROP = re.compile(r"^(\w+) (?:dropped|discarded|put down|left) the (\w+)\.$")


def told(row) -> tuple[list[str], list[str]]:
    """A conversation's user messages, and those of them that are moves."""
    users = [m["content"] for m in row["messages"] if m["role"] == "user"]
    return users, [u for u in users if MOVE.match(u)]


def answer_by_reading(facts: list[str], question: str) -> str:
    """An independent reader of the facts: what a question's answer must be."""
    place, holder, lies = {}, {}, {}
    for fact in facts:
        if m := MOVE.match(fact):
            place[m[1]] = m[2]
        elif m := GET.match(fact):
            holder[m[2]] = m[1]
            lies.pop(m[2], None)
        elif m := DROP.match(fact):
            holder.pop(m[2], None)
            lies[m[2]] = place[m[1]]
        else:
            raise AssertionError(f"not a fact in bAbI's forms: {fact!r}")
    if m := re.match(r"^Where is the (\w+)\?$", question):
        return place[holder[m[1]]] if m[1] in holder else lies[m[1]]
    if m := re.match(r"^Where is (\w+)\?$", question):
        return place[m[1]]
    if m := re.match(r"^Is (\w+) in the (\w+)\?$", question):
        return "yes" if place[m[1]] == m[2] else "no"
    if m := re.match(r"^How many objects is (\w+) carrying\?$", question):
        return COUNTS[sum(1 for who in holder.values() if who == m[1])]
    raise AssertionError(f"not a question in bAbI's forms: {question!r}")


def test_every_answer_follows_from_the_facts_told():
    rng = random.Random(5)
    seen_tasks, longest = set(), 0
    for _ in range(300):
        s = story(rng, max_facts=40)
        facts, asked = [], 0
        for user, reply in zip(s["messages"][::2], s["messages"][1::2]):
            assert user["role"] == "user" and reply["role"] == "assistant"
            if reply["content"] == ACK:
                facts += re.findall(r"[^.]+\.", user["content"])
                facts = [f.strip() for f in facts]
            else:
                q = s["questions"][asked]
                asked += 1
                assert reply["content"] == q["answer"] == answer_by_reading(facts, user["content"])
                assert 0 <= q["distance"] < len(facts)
                seen_tasks.add(q["task"])
        assert asked == len(s["questions"])
        longest = max(longest, len(facts))
    assert seen_tasks == {1, 2, 6, 7} and longest >= 38


def test_a_curriculum_stage_keeps_to_the_first_people_and_its_answers_hold():
    for people, names in ((1, {"Mary"}), (2, {"Mary", "John"})):
        rng, seen = random.Random(people), set()
        for _ in range(100):
            s = story(rng, max_facts=20, people=people)
            facts = []
            for user, reply in zip(s["messages"][::2], s["messages"][1::2]):
                seen.update(re.findall(r"\b(Mary|John|Daniel|Sandra)\b", user["content"]))
                if reply["content"] == ACK:
                    facts += [f.strip() for f in re.findall(r"[^.]+\.", user["content"])]
                else:
                    assert reply["content"] == answer_by_reading(facts, user["content"])
        assert seen == names
    # All four people (the default) is the dataset as before: the same draws for the same seed.
    assert story(random.Random(9), people=4) == story(random.Random(9))


def test_the_dataset_is_the_same_for_a_seed_and_its_splits_differ():
    a, b = build(stories=30, seed=3, validation=10, test=10), build(stories=30, seed=3, validation=10, test=10)
    assert a["train"]["messages"] == b["train"]["messages"] and a["test"]["questions"] == b["test"]["questions"]
    assert a["train"]["messages"][:10] != a["validation"]["messages"]
    assert build(stories=30, seed=4, validation=10, test=10)["train"]["messages"] != a["train"]["messages"]
    assert set(a) == {"train", "validation", "test"} and a["train"].column_names == ["messages", "questions"]


def test_official_babi_rows_become_the_same_conversations():
    row = {"story": {"id": ["1", "2", "3", "4", "5"], "type": [0, 0, 1, 0, 1],
                     "text": ["Mary moved to the bathroom.", "John went to the hallway.", "Where is Mary?",
                              "Mary went back to the garden.", "Where is Mary?"],
                     "answer": ["", "", "bathroom", "", "garden"], "supporting_ids": [[], [], ["1"], [], ["4"]]}}
    [conversation] = from_babi_qa([row])
    assert [m["content"] for m in conversation["messages"]] == [
        "Mary moved to the bathroom.", ACK, "John went to the hallway.", ACK, "Where is Mary?", "bathroom",
        "Mary went back to the garden.", ACK, "Where is Mary?", "garden"]
    assert [q["distance"] for q in conversation["questions"]] == [1, 0]


def test_render_feeds_the_chat_s_protocol_and_masks_the_replies():
    text, mask = render([{"role": "user", "content": "Where is Mary?"}, {"role": "assistant", "content": "garden"}],
                        "\n", "\n")
    assert text == "Where is Mary?\ngarden\n"
    assert "".join(c for c, m in zip(text, mask) if m) == "garden\n"


def test_the_loss_loop_scores_only_what_the_mask_marks(small_model):
    import torch

    from lstm_model.evaluate import text_loss

    ids = torch.randint(0, small_model.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.rand(2, 40, generator=torch.Generator().manual_seed(2)) < 0.3
    logits, _ = small_model.eval()(ids)
    everything = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                   reduction="none")
    marked = mask[:, 1:].reshape(-1)
    expected = everything[marked].mean().item()
    got = text_loss(small_model, ids, score_first=False, chunk=7, mask=mask)
    assert got.count == int(marked.sum()) and abs(got.mean - expected) < 1e-5


def test_a_chat_dataset_trains_with_the_loss_on_the_replies(tmp_path):
    from lstm_model import load_model
    from lstm_model.data import encode_masked, load_corpus
    from lstm_model.evaluate import text_loss, whole_text_loss
    from lstm_model.train import TrainingStopped, resolve_config, train

    folder = str(tmp_path / "chat")
    build(stories=120, seed=1, validation=20, test=5, max_facts=6).save_to_disk(folder)
    corpus = load_corpus(folder, chat=("\n", "\n"))
    first = build(stories=120, seed=1, validation=20, test=5, max_facts=6)["train"][0]["messages"]
    text, mask = render(first, "\n", "\n")
    assert corpus.train.startswith(text) and corpus.train_mask[: len(mask)] == mask and corpus.val_from == "split:validation"
    out = tmp_path / "model"
    run = train(resolve_config(["--dataset", folder, "--out", str(out), "--max-steps", "8", "--hidden-size", "24",
                                "--embed-dim", "8", "--batch-size", "4", "--seq-len", "32", "--eval-every", "4",
                                "--eval-batches", "2", "--quiet", "--sample-chars", "10", "--turn-separator", "\n",
                                "--stop-sequence", "\n", "--loss-on", "replies"]))
    model = load_model(str(out))
    ids, marks = encode_masked(model.vocab, corpus.val, corpus.val_mask)
    # by default each held-out conversation is read from a fresh state, as a new chat session reads it:
    # the same figure as the conversations scored one at a time (no padding, no batching)
    total = count = 0
    for a, b in zip(corpus.val_starts, corpus.val_starts[1:] + [len(corpus.val)]):
        scored = marks[a:b].clone()
        scored[0] = False
        one = text_loss(model, ids[a:b], mask=scored)
        total, count = total + one.total, count + one.count
    assert count == int(marks.sum()) - int(marks[corpus.val_starts].sum())
    assert abs(run.metrics["val_loss_full"] - total / count) < 1e-5
    assert abs(run.metrics["val_loss_full"] - whole_text_loss(model, ids)) > 1e-4  # not the loss on everything
    carried = train(resolve_config(["--dataset", folder, "--out", str(tmp_path / "carried"), "--max-steps", "4",
                                    "--hidden-size", "24", "--embed-dim", "8", "--batch-size", "4", "--seq-len", "32",
                                    "--eval-every", "4", "--eval-batches", "2", "--quiet", "--sample-chars", "10",
                                    "--turn-separator", "\n", "--stop-sequence", "\n", "--loss-on", "replies",
                                    "--conversation-state", "carried"]))
    model = load_model(str(tmp_path / "carried"))
    assert abs(carried.metrics["val_loss_full"] - whole_text_loss(model, ids, marks)) < 1e-6  # one long text
    with pytest.raises(TrainingStopped, match="needs a chat dataset"):
        plain = tmp_path / "plain.txt"
        plain.write_text("ANNA:\nThe sea is calm.\n\n" * 200)
        train(resolve_config(["--dataset", str(plain), "--out", str(tmp_path / "m2"), "--max-steps", "2",
                              "--hidden-size", "8", "--batch-size", "2", "--seq-len", "16", "--quiet",
                              "--loss-on", "replies"]))


def test_conversations_are_laid_out_each_beginning_marked():
    import torch

    from lstm_model.data import conversation_streams

    starts = [0, 10, 35, 36, 60, 61, 90]  # 35 and 60 begin conversations of one character: left out
    ids = torch.arange(1, 101)
    mask = torch.arange(100) % 3 == 0
    streams, targets, begins = conversation_streams(ids, starts, 2, 8, mask=mask, seed=3, align=4)
    assert streams.shape == targets.shape == begins.shape and (streams.shape[1] - 1) % 8 == 0
    found = []
    for row, at in begins.nonzero().tolist():
        assert at % 4 == 0
        a = starts.index(int(streams[row, at]) - 1)
        b = (starts + [100])[a + 1]
        found.append(a)
        assert streams[row, at : at + b - starts[a]].tolist() == ids[starts[a] : b].tolist()
        assert targets[row, at : at + b - starts[a]].tolist() == [False] + mask[starts[a] + 1 : b].tolist()
    assert sorted(found) == [0, 1, 3, 5, 6]
    assert int(targets.sum()) == sum(int(mask[a + 1 : b].sum()) for a, b in [(0, 10), (10, 35), (36, 60), (61, 90), (90, 100)])
    assert int((streams != 0).sum()) == 98  # every character of the five conversations, once; the rest padding
    again = conversation_streams(ids, starts, 2, 8, mask=mask, seed=3, align=4)
    other = conversation_streams(ids, starts, 2, 8, mask=mask, seed=4, align=4)
    assert torch.equal(again[0], streams) and any(not torch.equal(o, t) for o, t in zip(other, (streams, targets, begins)))


def test_the_state_is_zeroed_where_a_conversation_begins(small_model):
    import torch

    from lstm_model.regularize import Regularized

    ids = torch.randint(0, small_model.vocab_size, (2, 30), generator=torch.Generator().manual_seed(4))
    begins = torch.zeros(2, 30, dtype=torch.bool)
    begins[0, 7] = begins[1, 19] = True
    state = tuple(torch.randn_like(t) for t in small_model.begin_state(2))
    model = small_model.eval()
    for net in (model, Regularized(model, weight_drop=0.3, locked_dropout=0.2).eval()):
        logits, after = net(ids, state, begins)
        for row, at in ((0, 7), (1, 19)):
            before, _ = model(ids[row : row + 1, :at], tuple(t[:, row : row + 1] for t in state))
            fresh, end = model(ids[row : row + 1, at:])  # from begin_state
            assert torch.allclose(logits[row, :at], before[0], atol=1e-5)
            assert torch.allclose(logits[row, at:], fresh[0], atol=1e-5)
            assert torch.allclose(after[0][:, row], end[0][:, 0], atol=1e-5)


def test_a_conversation_starts_training_from_a_fresh_state(tmp_path):
    import torch

    from lstm_model.distributed import Dist
    from lstm_model.train import Trainer, resolve_config
    from lstm_model.train_config import pick_device

    folder = str(tmp_path / "chat")
    build(stories=60, seed=2, validation=8, test=2, max_facts=6).save_to_disk(folder)

    def first_loss(state, noisy):
        (tmp_path / state).mkdir(exist_ok=True)
        c = resolve_config(["--dataset", folder, "--out", str(tmp_path / state), "--hidden-size", "16", "--embed-dim",
                            "8", "--batch-size", "4", "--seq-len", "32", "--dropout", "0", "--quiet",
                            "--turn-separator", "\n", "--stop-sequence", "\n", "--conversation-state", state])
        trainer = Trainer(c, Dist(), pick_device("cpu"))
        _, x, y, m, s = next(trainer.data.epoch_batches(0, 0))
        if noisy:  # a state left over from something else
            trainer.carry = tuple(torch.randn_like(t) * 3 for t in trainer.model.begin_state(x.shape[0]))
        return trainer.train_step(x, y, m, s), s

    fresh, begins = first_loss("fresh", False)
    assert begins[:, 0].all()  # every row begins with a conversation
    assert first_loss("fresh", True)[0] == pytest.approx(fresh, abs=1e-6)  # the leftover state was wiped
    assert first_loss("carried", True)[0] != pytest.approx(first_loss("carried", False)[0], abs=1e-4)


@pytest.mark.parametrize("people", [4, 2])
def test_distance_probes_ask_about_a_fact_exactly_that_far_back(people):
    rng = random.Random(9)
    for distance in (0, 1, 5, 25, 40):
        for _ in range(20):
            p = distance_probe(rng, distance, people=people)
            names = set(re.findall(r"\b(Mary|John|Daniel|Sandra)\b", " ".join(m["content"] for m in p["messages"])))
            assert names <= set(PEOPLE[:people])
            users = [m["content"] for m in p["messages"] if m["role"] == "user"]
            facts, question = users[:-1], users[-1]
            person = question.removeprefix("Where is ").removesuffix("?")
            last = max(i for i, f in enumerate(facts) if f.startswith(person + " "))
            assert len(facts) - 1 - last == distance == p["questions"][0]["distance"]
            assert p["messages"][-1]["content"] == answer_by_reading(facts, question) == p["questions"][0]["answer"]
            assert p["questions"][0]["turn"] == len(users) - 1


def test_a_probe_past_0_facts_needs_someone_else_to_move():
    assert distance_probe(random.Random(1), 0, people=1)["questions"][0]["answer"]
    with pytest.raises(ValueError, match="at least two people"):
        distance_probe(random.Random(1), 3, people=1)


def test_yes_no_probes_ask_about_the_place_or_the_trap_recency_falls_into():
    rng, traps, answers = random.Random(4), 0, set()
    for _ in range(200):
        p = distance_probe(rng, rng.randint(1, 6), people=2, task=6)
        users = [m["content"] for m in p["messages"] if m["role"] == "user"]
        facts, question = users[:-1], users[-1]
        assert p["messages"][-1]["content"] == answer_by_reading(facts, question) == p["questions"][0]["answer"]
        assert p["questions"][0]["task"] == 6
        answers.add(p["questions"][0]["answer"])
        asked = re.match(r"^Is \w+ in the (\w+)\?$", question)[1]
        traps += p["questions"][0]["answer"] == "no" and asked == MOVE.match(facts[-1])[2]
    assert answers == {"yes", "no"} and traps > 50  # most "no" probes name the last place said
    with pytest.raises(ValueError, match="tasks 1 and 6"):
        distance_probe(random.Random(1), 2, people=2, task=7)


def test_a_share_of_probes_mixes_into_the_stories_deterministically():
    plain = build(stories=40, seed=3, validation=5, test=5, people=2)
    assert build(stories=40, seed=3, validation=5, test=5, people=2, probe_share=0.0)["train"]["messages"] == \
        plain["train"]["messages"]  # no probes: the stories of earlier versions
    mixed = build(stories=400, seed=3, validation=5, test=5, people=2, probe_share=0.5, probe_distance=6, tasks=(1, 2))
    assert mixed["train"]["messages"] == build(stories=400, seed=3, validation=5, test=5, people=2, probe_share=0.5,
                                               probe_distance=6, tasks=(1, 2))["train"]["messages"]
    probes = 0
    for row in mixed["train"]:
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        asked = len(row["questions"])
        is_probe = asked and all(MOVE.match(u) for u in users[:-asked]) and row["questions"][0]["turn"] == len(users) - asked
        if is_probe and asked == 2:  # past 0 facts back: the person, and the last to move, in either order
            facts = users[:-2]
            names = [re.match(r"^Where is (\w+)\?$", u)[1] for u in users[-2:]]
            last_mover = MOVE.match(facts[-1])[1]
            assert sorted(q["distance"] == 0 for q in row["questions"]) == [False, True]
            for name, q, question in zip(names, row["questions"], users[-2:]):
                assert q["task"] == 1 and q["answer"] == answer_by_reading(facts, question) and q["distance"] <= 6
                assert (q["distance"] == 0) == (name == last_mover)
            assert names[0] != names[1]
            probes += 1
    assert 120 < probes < 230  # about half are probes, of which 6 in 7 are past the last fact


def test_a_probe_share_that_cannot_be_made_is_refused_with_a_sentence(tmp_path, capsys):
    from lstm_model.memory_tasks import main

    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "d"), "--probe-share", "1.5"])
    assert stop.value.code == 2 and "fraction of the conversations" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--probe-share", "0.5", "--tasks", "2", "7"])
    assert "add one of them to the tasks" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_question_rate_sets_how_often_a_story_asks():
    assert story(random.Random(2), question_rate=0.5) == story(random.Random(2))  # the default stream
    rng = random.Random(3)
    for _ in range(50):
        s = story(rng, max_facts=10, max_per_message=1, people=2, tasks=(1,), question_rate=1.0)
        replies = [m["content"] for m in s["messages"][1::2]]
        # a question after every fact (the first fact is a move, so a task-1 question can always be asked)
        assert all(a == ACK for a in replies[::2]) and ACK not in replies[1::2]
        assert len(s["questions"]) == replies.count(ACK) == len(replies) // 2
    with pytest.raises(ValueError, match="chance per message"):
        build(stories=2, validation=1, test=1, question_rate=2)


def test_a_probe_can_also_ask_about_the_last_to_move_so_the_name_decides():
    rng, orders = random.Random(8), set()
    for _ in range(60):
        p = distance_probe(rng, rng.randint(1, 5), people=3, also_ask_last=True)
        users = [m["content"] for m in p["messages"] if m["role"] == "user"]
        facts, questions = users[:-2], users[-2:]
        answers = [answer_by_reading(facts, q) for q in questions]
        assert [m["content"] for m in p["messages"][-3::2]] == answers == [q["answer"] for q in p["questions"]]
        assert [q["turn"] for q in p["questions"]] == [len(users) - 2, len(users) - 1]
        last = MOVE.match(facts[-1])
        orders.add(tuple(q["distance"] == 0 for q in p["questions"]))
        assert answers[[q["distance"] for q in p["questions"]].index(0)] == last[2]  # the last place said
    assert orders == {(True, False), (False, True)}
    assert len(distance_probe(random.Random(1), 0, people=2, also_ask_last=True)["questions"]) == 1


def test_the_shortest_probes_drill_binding_alone():
    dd = build(stories=50, seed=1, validation=2, test=2, tasks=(1,), people=2, probe_share=1, probe_distance=1,
               probe_lead=0)
    for row in dd["train"]:
        users, facts = told(row)
        assert len(facts) in (1, 2) and len(row["questions"]) == len(facts)  # 1 fact: 1 question; 2: both people
        assert len({MOVE.match(f)[1] for f in facts}) == len(facts)  # two facts: one about each person
        for q, question in zip(row["questions"], users[len(facts):]):
            assert q["answer"] == answer_by_reading(facts, question)


def test_a_nearest_probe_distance_makes_every_drill_two_moves_and_two_questions(tmp_path, capsys):
    from lstm_model.memory_tasks import main

    dd = build(stories=60, seed=2, validation=2, test=2, tasks=(1,), people=2, probe_share=1, probe_distance=1,
               probe_lead=0, probe_min_distance=1)
    for row in dd["train"]:
        users, facts = told(row)
        assert len(facts) == 2 and len(row["questions"]) == 2
        assert {MOVE.match(f)[1] for f in facts} == {"Mary", "John"}
        assert sorted(q["distance"] for q in row["questions"]) == [0, 1]
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--probe-share", "1", "--probe-distance", "2", "--probe-min-distance", "3"])
    assert "lower --probe-min-distance" in capsys.readouterr().err


def test_a_drill_share_keeps_binding_drills_in_a_wider_stage_s_mix(tmp_path, capsys):
    from lstm_model.memory_tasks import main

    kw = dict(stories=300, seed=4, validation=2, test=2, tasks=(1,), people=2, probe_share=1, probe_distance=4,
              probe_lead=2)
    assert build(**kw)["train"]["messages"] == build(**kw, drill_share=0.0)["train"]["messages"]  # no draw spent
    mixed = build(**kw, drill_share=0.5)
    assert mixed["train"]["messages"] == build(**kw, drill_share=0.5)["train"]["messages"]
    drills = 0
    for row in mixed["train"]:
        users, facts = told(row)
        for q, question in zip(row["questions"], users[len(facts):]):
            assert q["answer"] == answer_by_reading(facts, question)
        drills += len(facts) == 2 and {MOVE.match(f)[1] for f in facts} == {"Mary", "John"} and len(row["questions"]) == 2
    assert 150 < drills < 230  # half are drills, and a few of the wider probes look like one (lead 0, 1 back)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--probe-share", "1", "--drill-share", "2"])
    assert "fraction of the probes" in capsys.readouterr().err


def test_a_roll_call_drill_asks_about_everyone_who_moved(tmp_path, capsys):
    from lstm_model.memory_tasks import main

    kw = dict(stories=200, seed=5, validation=2, test=2, tasks=(1, 6), people=4, probe_share=1, probe_distance=8,
              probe_lead=3, drill_share=0.5)
    two = build(**kw)
    assert two["train"]["messages"] == build(**kw, drill_people=2)["train"]["messages"]  # the default: as before
    rolls = build(**kw, drill_people=4)
    assert rolls["train"]["messages"] == build(**kw, drill_people=4)["train"]["messages"]  # deterministic
    calls = 0
    for row in rolls["train"]:
        users, facts = told(row)
        for q, question in zip(row["questions"], users[len(facts):]):
            assert q["answer"] == answer_by_reading(facts, question)
        if len(row["questions"]) == 4:  # a roll call: four moves, one each, and all four asked
            calls += 1
            assert sorted(MOVE.match(f)[1] for f in facts) == sorted(["Mary", "John", "Daniel", "Sandra"])
            assert sorted(q["distance"] for q in row["questions"]) == [0, 1, 2, 3]
    assert 70 < calls < 130
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--people", "2", "--probe-share", "1", "--drill-share", "0.5",
              "--drill-people", "4"])
    assert "--drill-people 4" in capsys.readouterr().err


def test_a_carrying_drill_asks_about_every_object_and_carrier(tmp_path, capsys):
    from lstm_model.memory_tasks import main

    kw = dict(stories=300, seed=5, validation=2, test=2, tasks=(1, 2, 6, 7), people=4, probe_share=0.4,
              drill_share=0.5, drill_people=4)
    plain = build(**kw)
    assert plain["train"]["messages"] == build(**kw, carry_share=0)["train"]["messages"]  # the default: as before
    mixed = build(**kw, carry_share=0.3)
    assert mixed["train"]["messages"] == build(**kw, carry_share=0.3)["train"]["messages"]  # deterministic
    drills, counts = 0, set()
    for row in mixed["train"]:
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        asked = users[len(users) - len(row["questions"]):] if row["questions"] else []
        at_end = row["questions"] and row["questions"][0]["turn"] == len(users) - len(asked)
        if not (at_end and len(asked) >= 2 and {q["task"] for q in row["questions"]} <= {2, 7}):
            continue  # a story (one question at a time) or a probe: the first test reads those
        drills += 1
        facts = users[:len(users) - len(asked)]
        for q, question in zip(row["questions"], asked):
            assert q["answer"] == answer_by_reading(facts, question)
        assert sorted(MOVE.match(f)[1] for f in facts[:4]) == sorted(PEOPLE)  # everyone is somewhere first
        touched = {m[2] for f in facts if (m := GET.match(f) or DROP.match(f))}
        carriers = {m[1] for f in facts if (m := GET.match(f) or DROP.match(f))}
        counted = {re.match(r"^How many objects is (\w+)", x)[1] for x in asked if x.startswith("How")}
        assert {re.match(r"^Where is the (\w+)\?$", x)[1] for x in asked if x.startswith("Where")} == touched
        assert carriers <= counted and len(counted) <= 2  # one or two carriers, each asked (some only moved)
        counts |= {q["answer"] for q in row["questions"] if q["task"] == 7}
    assert 60 < drills < 120 and {"none", "one", "two"} <= counts
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--tasks", "1", "6", "--carry-share", "0.5"])
    assert "carrying drills ask tasks 2 or 7" in capsys.readouterr().err


def test_object_drills_start_from_one_person_and_leave_objects_behind(tmp_path, capsys):
    from lstm_model.memory_tasks import carry_drill, main

    kw = dict(stories=200, seed=3, validation=2, test=2, tasks=(1, 2, 6, 7), people=4, carry_share=0.5)
    # the defaults spelled out draw the same conversations as before the options existed
    assert build(**kw)["train"]["messages"] == build(**kw, carry_people=None, carry_facts=6,
                                                     carry_moves=0.25, carry_wait=0,
                                                     carry_ask=0.0)["train"]["messages"]
    rng, people_seen, left_behind = random.Random(11), set(), 0
    for _ in range(300):
        row = carry_drill(rng, people=4, max_people=2, max_facts=4, move_chance=0.5)
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        facts = users[:len(users) - len(row["questions"])]
        names = {m[1] for f in facts if (m := MOVE.match(f) or GET.match(f) or DROP.match(f))}
        people_seen.add(len(names))
        assert names <= {"Mary", "John"} and 2 <= len(facts) - len(names) <= 4  # everyone placed, then 2-4 facts
        assert {MOVE.match(f)[1] for f in facts[:len(names)]} == names
        for q, question in zip(row["questions"], users[len(facts):]):
            assert q["answer"] == answer_by_reading(facts, question)
            last_place = MOVE.match([f for f in facts if MOVE.match(f)][-1])[2]
            left_behind += q["task"] == 2 and q["answer"] != last_place
    assert people_seen == {1, 2} and left_behind > 20  # where an object lies is often not the last place said
    waits = set()
    for _ in range(200):  # --carry-wait: moves by anyone after the carrying, the answers still the facts'
        row = carry_drill(rng, people=4, max_people=2, max_facts=4, move_chance=0.5, wait=6)
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        facts = users[:len(users) - len(row["questions"])]
        carrying = max((i for i, f in enumerate(facts) if GET.match(f) or DROP.match(f)), default=None)
        if carrying is not None:
            waits.add(len(facts) - 1 - carrying)
        for q, question in zip(row["questions"], users[len(facts):]):
            assert q["answer"] == answer_by_reading(facts, question)
    assert max(waits) >= 7 and min(waits) == 0  # up to 6 waiting moves (plus the carriers' own last moves)
    asked_between = 0
    for _ in range(100):  # --carry-ask 1: where an object is, asked after every fact once one is told of
        row = carry_drill(rng, people=4, max_people=2, max_facts=6, move_chance=0.5, wait=3, ask_chance=1.0)
        facts, questions = [], iter(row["questions"])
        for turn, (user, reply) in enumerate(zip(row["messages"][::2], row["messages"][1::2])):
            if reply["content"] == ACK:
                facts.append(user["content"])
                continue
            q = next(questions)
            assert q["turn"] == turn and reply["content"] == q["answer"] == answer_by_reading(facts, user["content"])
            asked_between += any(m["content"] == ACK for m in row["messages"][2 * turn + 3::2])  # facts follow
        assert next(questions, None) is None
    assert asked_between > 200  # most questions come between facts, not only at the end
    for flags, said in ((["--carry-people", "5"], "--carry-people 5"),
                        (["--carry-facts", "1"], "argument --carry-facts: must be from 2 to 10,000 (got 1)"),
                        (["--carry-moves", "1"], "move chance"),
                        (["--carry-wait", "-1"], "argument --carry-wait: must be from 0 to 10,000 (got -1)"),
                        (["--carry-ask", "2"], "asking chance")):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path / "d"), "--carry-share", "0.5", *flags])
        assert said in capsys.readouterr().err


def test_each_object_question_says_whether_the_object_is_held_carried_or_left_and_what_lures_it_has():
    rng, seen, lured = random.Random(8), set(), 0
    for _ in range(200):
        s = story(rng, max_facts=30, tasks=(2,))
        facts = []
        for turn, (user, reply) in enumerate(zip(s["messages"][::2], s["messages"][1::2])):
            if reply["content"] == ACK:
                facts += [f.strip() for f in re.findall(r"[^.]+\.", user["content"])]
                continue
            q = next(q for q in s["questions"] if q["turn"] == turn)
            thing = re.match(r"^Where is the (\w+)\?$", user["content"])[1]
            last = max(i for i, f in enumerate(facts) if (m := GET.match(f) or DROP.match(f)) and m[2] == thing)
            if DROP.match(facts[last]):
                expected = "left"
            else:
                holder = GET.match(facts[last])[1]
                moved = any((m := MOVE.match(f)) and m[1] == holder for f in facts[last + 1:])
                expected = "carried" if moved else "held"
            assert q["kind"] == expected, (facts, user["content"])
            seen.add(expected)

            def place_of(person, upto):  # where `person` was after the first `upto` facts
                return [m[2] for f in facts[:upto] if (m := MOVE.match(f)) and m[1] == person][-1]

            def where(obj):  # read from the facts: where its holder is now, or where it was dropped
                i = max(i for i, f in enumerate(facts) if (m := GET.match(f) or DROP.match(f)) and m[2] == obj)
                who = (GET.match(facts[i]) or DROP.match(facts[i]))[1]
                return place_of(who, len(facts)) if GET.match(facts[i]) else place_of(who, i)

            dropper = DROP.match(facts[last])[1] if expected == "left" else None
            assert q["left_by"] == (place_of(dropper, len(facts)) if dropper else None)
            told = [o for o in OBJECTS if o != thing and any((m := GET.match(f)) and m[2] == o for f in facts)]
            assert q["others"] == [where(o) for o in told]
            lured += q["left_by"] not in (None, q["answer"])
    assert seen == {"held", "carried", "left"} and lured > 20  # dropped things whose dropper moved on
    assert all(q["kind"] is None and q["others"] is None for q in distance_probe(rng, 3, people=4)["questions"])


NOTE = re.compile(r"So the (\w+) is in the (\w+)\.")


def test_note_taking_acknowledgements_say_where_each_object_placed_now_is(tmp_path):
    from datasets import load_from_disk

    from lstm_model.memory_tasks import carry_drill, main

    kw = dict(stories=300, seed=8, validation=2, test=2, people=4, probe_share=0.2, carry_share=0.5,
              carry_people=4, carry_facts=12, carry_moves=0.5, carry_wait=8)
    plain, noted = build(**kw)["train"], build(**kw, notes=True)["train"]
    assert plain["questions"] == noted["questions"]  # the same draws: only the acknowledgements differ
    notes_seen = objects_asked = 0
    for a, b in zip(plain["messages"], noted["messages"]):
        assert [m["content"] for m in a if m["role"] == "user"] == [m["content"] for m in b if m["role"] == "user"]
        facts, last_note = [], {}
        for user, reply in zip(b[::2], b[1::2]):
            if not reply["content"].startswith(ACK):  # a question: a task-2 answer is the object's last note
                if m := re.match(r"^Where is the (\w+)\?$", user["content"]):
                    assert reply["content"] == last_note[m[1]]
                    objects_asked += 1
                continue
            new = [f.strip() for f in re.findall(r"[^.]+\.", user["content"])]
            # the notes, read independently: after each fact, every object it got or dropped, and
            # everything its mover holds, each where it is then
            expected = []
            for i, fact in enumerate(new):
                before = facts + new[:i + 1]
                if m := GET.match(fact) or DROP.match(fact):
                    placed = [m[2]]
                else:
                    placed = [o for o in ("football", "apple", "milk") if holder_of(before, o) == MOVE.match(fact)[1]]
                expected += [(o, answer_by_reading(before, f"Where is the {o}?")) for o in placed]
            notes = NOTE.findall(reply["content"])
            assert reply["content"] == " ".join([ACK] + [f"So the {o} is in the {p}." for o, p in notes])
            assert notes == expected
            facts += new
            last_note.update(notes)
            notes_seen += len(notes)
    assert notes_seen > 1000 and objects_asked > 200
    drill = carry_drill(random.Random(4), people=2, notes=True)
    assert drill["questions"] == carry_drill(random.Random(4), people=2)["questions"]
    main(["--out", str(tmp_path / "d"), "--stories", "40", "--validation", "2", "--test", "2", "--notes",
          "--tasks", "2"])
    replies = [m["content"] for row in load_from_disk(str(tmp_path / "d"))["train"]["messages"] for m in row
               if m["role"] == "assistant"]
    assert any(NOTE.search(r) for r in replies) and all(r.startswith(ACK) or " " not in r for r in replies)


def holder_of(facts: list[str], thing: str) -> str | None:
    """Who holds `thing` after `facts`, read independently (None: it lies somewhere)."""
    who = None
    for fact in facts:
        if (m := GET.match(fact)) and m[2] == thing:
            who = m[1]
        elif (m := DROP.match(fact)) and m[2] == thing:
            who = None
    return who


def test_idle_waits_leave_each_object_s_place_settled_that_far_back():
    """--carry-wait-idle: a drill's waiting moves are made by people who carry nothing, so objects'
    places (and notes) lie further back than when anyone may move them along; answers still hold."""
    from lstm_model.memory_tasks import carry_drill

    far = {}
    for idle in (False, True):
        rng, distances = random.Random(6), []
        for _ in range(300):
            row = carry_drill(rng, people=4, max_people=4, max_facts=8, move_chance=0.5, wait=30, notes=True,
                              wait_idle=idle)
            users = [m["content"] for m in row["messages"] if m["role"] == "user"]
            facts = [u for u in users if not u.endswith("?")]
            for q in row["questions"]:
                assert q["answer"] == answer_by_reading(facts, users[q["turn"]])
                if q["task"] == 2:
                    distances.append(q["distance"])
        far[idle] = sum(d >= 10 for d in distances) / len(distances)
    assert far[True] > far[False] + 0.15, far
    assert carry_drill(random.Random(2), people=4, wait=5) == carry_drill(random.Random(2), people=4, wait=5,
                                                                          wait_idle=False)


def test_an_object_roll_call_asks_where_every_object_is(tmp_path, capsys):
    """Object roll calls (--object-share): every object got by someone, then all three asked in
    random order, each answer following from the facts; mostly in different places, so the name
    in the question decides."""
    from lstm_model.memory_tasks import main, object_roll_call

    rng, apart = random.Random(3), 0
    for _ in range(200):
        row = object_roll_call(rng, people=4, wait=10, notes=True)
        users = [m["content"] for m in row["messages"] if m["role"] == "user"]
        facts = users[:-3]
        assert sorted(u[len("Where is the "):-1] for u in users[-3:]) == sorted(OBJECTS)
        for q in row["questions"]:
            assert q["task"] == 2 and q["answer"] == answer_by_reading(facts, users[q["turn"]])
        apart += len({q["answer"] for q in row["questions"]}) > 1
    assert apart > 150
    kw = dict(stories=200, seed=2, validation=2, test=2, carry_share=0.3)
    assert build(**kw)["train"]["messages"] == build(**kw, object_share=0)["train"]["messages"]
    mixed = build(**kw, object_share=0.2)["train"]
    rolls = sum(1 for qs in mixed["questions"] if len(qs) == 3 and all(q["task"] == 2 for q in qs))
    assert 25 < rolls < 70
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--tasks", "1", "--object-share", "0.2"])
    assert "object roll calls ask tasks 2" in capsys.readouterr().err


# -- the command line: every bad argument or --out refused in one sentence, nothing written ---------

SMALL = ["--stories", "5", "--validation", "1", "--test", "1"]


def refused(capsys, argv, status=2) -> str:
    """The last line `main(argv)` writes on stderr, having checked that it ends with `status` and
    prints no traceback."""
    from lstm_model.memory_tasks import main

    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == status and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("flags, sentence", [
    (["--stories", "1000000000000"], "1,000,000,000,002 conversations of up to 40 facts are too many to build in "
                                     "memory; ask for at most 232,558 in all (--stories, --validation and --test"),
    (["--stories", "300000", "--max-facts", "40"], "ask for at most 232,558 in all"),
    (["--stories", "-5"], "argument --stories: must be at least 1 (got -5)"),
    (["--stories", "lots"], "argument --stories: expected a whole number, got 'lots'"),
    (["--validation", "-1"], "argument --validation: must be at least 1 (got -1)"),
    (["--test", "0"], "argument --test: must be at least 1 (got 0)"),
    (["--max-facts", "0"], "argument --max-facts: must be from 1 to 10,000 (got 0)"),
    (["--max-facts", "-1"], "argument --max-facts: must be from 1 to 10,000 (got -1)"),
    (["--max-facts", "100000"], "argument --max-facts: must be from 1 to 10,000 (got 100,000)"),
    (["--max-per-message", "0"], "argument --max-per-message: must be from 1 to 10,000 (got 0)"),
    (["--probe-share", "1", "--probe-lead", "-1"], "argument --probe-lead: must be from 0 to 10,000 (got -1)"),
    (["--probe-distance", "-2"], "argument --probe-distance: must be from 0 to 10,000 (got -2)"),
    (["--drill-people", "9"], "argument --drill-people: must be from 2 to 4 (got 9)"),
    (["--question-rate", "nan"], "the question rate is a chance per message, from 0 to 1 (got nan)"),
    (["--probe-share", "inf"], "the probe share is a fraction of the conversations, from 0 to 1 (got inf)"),
    (["--carry-ask", "-0.5"], "asking chance is a fraction from 0 to 1"),
    (["--push-to-hub", "not a repo"], "--push-to-hub 'not a repo' is not a Hub repo id; give user/name"),
])
def test_a_bad_argument_is_refused_in_one_sentence_before_anything_is_written(flags, sentence, tmp_path, capsys):
    line = refused(capsys, ["--out", str(tmp_path / "d"), *SMALL, *flags])
    assert line.startswith("python -m lstm_model.memory_tasks: error: ") and sentence in line
    assert os.listdir(tmp_path) == []  # neither the dataset nor its temporary folder


def test_an_out_that_is_a_file_or_holds_other_files_is_refused_and_left_alone(tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for out, sentence in ((mine, f"--out {mine} is a file; give a folder for the dataset"),
                          (mine / "d", f"--out {mine / 'd'} lies under the file {mine}; give a folder path"),
                          (other, f"--out {other} holds other files; give a new or empty folder"),
                          ("", "--out needs a folder path")):
        assert sentence in refused(capsys, ["--out", str(out), *SMALL])
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "other"] and os.listdir(other) == ["keep.txt"]
    assert mine.read_text() == "mine"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where nothing can be made")
def test_an_unwritable_out_is_refused_before_anything_is_built(capsys, monkeypatch):
    import lstm_model.memory_tasks as memory_tasks

    monkeypatch.setattr(memory_tasks, "build", lambda *args: pytest.fail("built before --out was found unwritable"))
    line = refused(capsys, ["--out", "/proc/mt", *SMALL], status=1)
    assert line.startswith("error: cannot write to --out /proc/mt (") and line.endswith("give a folder you can write to.")


def test_a_dataset_is_replaced_only_once_the_new_one_is_whole(tmp_path, capsys, monkeypatch):
    from datasets import DatasetDict, load_from_disk

    from lstm_model.memory_tasks import main

    out = tmp_path / "d"
    assert main(["--out", str(out), *SMALL]) == 0
    before = load_from_disk(str(out))["train"]["messages"]

    def full_disk(self, path, **kwargs):  # a save that stops halfway
        os.makedirs(os.path.join(path, "train"))
        (tmp_path / "half").write_text("")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DatasetDict, "save_to_disk", full_disk)
    line = refused(capsys, ["--out", str(out), *SMALL, "--seed", "1"], status=1)
    assert line == (f"error: could not write the dataset to --out {out} (No space left on device); nothing was "
                    "written there: free disk space or give another folder.")
    monkeypatch.undo()
    assert load_from_disk(str(out))["train"]["messages"] == before
    assert sorted(os.listdir(tmp_path)) == ["d", "half"]  # no temporary folder left
    assert main(["--out", str(out), *SMALL, "--seed", "1", "--stories", "7"]) == 0  # a dataset it wrote: replaced
    assert len(load_from_disk(str(out))["train"]) == 7 and sorted(os.listdir(tmp_path)) == ["d", "half"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # a folder's usual permissions


def test_every_split_is_saved_with_one_schema_so_a_small_dataset_pushes(tmp_path, hub):
    from datasets import load_dataset, load_from_disk

    from lstm_model.memory_tasks import chat_features, main

    # Inferred from the rows, these splits' features differ (`left_by` is null where no question
    # was about a left object), which the Hub refuses: the explicit schema makes them one.
    raw = build(stories=10, validation=1, test=1)
    assert len({repr(split.features) for split in raw.values()}) > 1
    out = tmp_path / "d"
    assert main(["--out", str(out), "--stories", "10", "--validation", "1", "--test", "1",
                 "--push-to-hub", "standin-user/babi-tiny"]) == 0
    saved = load_from_disk(str(out))
    assert [split.features for split in saved.values()] == [chat_features()] * 3
    assert saved["validation"]["messages"] == raw["validation"]["messages"]
    pushed = load_dataset("standin-user/babi-tiny")
    assert {name: len(split) for name, split in pushed.items()} == {"train": 10, "validation": 1, "test": 1}
    assert pushed["train"]["questions"] == saved["train"]["questions"]
