"""How far back a chat model remembers: bAbI-form questions answered through `ChatSession`.

    python benchmarks/memory_tasks.py --model assets/babi [--stories 200 --probes 30 --png benchmarks/memory_distance.png]
    python benchmarks/memory_tasks.py --model runs/babi-p2 --people 2     (a curriculum stage, on stories of its own kind)
    python benchmarks/memory_tasks.py --model runs/t1 --people 2 --tasks 1 --probes-only --probes 60 --distances 0 1 2 5 10
    python benchmarks/memory_tasks.py --model assets/babi --babi DIR_OR_HUB_ID [--notes]    (bAbI's own stories)

With `--babi` (a folder of bAbI's `*_train.txt` files, or the Hub dataset `facebook/babi_qa`) the
stories are bAbI's own: tasks 1, 2, 3, 6, 7 and 8, the last 10% of each training file (held out
from training by `python -m lstm_model.babi_qa`, as the papers hold it out), one fact a message.
Per task: memory carried, memory off, the majority answer, the same messages as people type them
(`babi_qa.typed_variant`), and questions about people and objects never mentioned ("I don't
know." is right); beside them Weston et al. 2015's LSTM (1k) and the Entity Network (10k).

Held-out conversations come from `lstm_model.memory_tasks` with a random stream of their own (not
the training split's), so none is in the training set. Each user message is sent to a
`ChatSession` (greedy, the model's own turn separator and stop sequence), the model writes its own
acknowledgements, and each answer is compared with the right one, three ways:

- memory carried: one session for the whole conversation, the state kept from turn to turn;
- memory off: `ChatSession(memory=False)`, every turn read from a fresh state (the question alone);
- majority: always the most common answer of the task in the training stream.

Beside them, the loss on the right replies of the same conversations (teacher-forced), read as
one long text with the state carried from one conversation into the next, and each from a fresh
state as a new chat session reads it: a model trained with `--conversation-state carried` can be
good at the first and poor at the second, which is what the chat uses.

The stories' questions are also counted by how many facts back the fact that answers them was told
(0-2, 3-5, 6-10, 11-20, 21-40): where a task is lost, near or far; and task 2's by where the object
is: held (its holder has not moved since getting it), carried (the holder moved since) or left.

Then accuracy by distance on task 1 (`memory_tasks.distance_probe`: the supporting fact exactly
0 to 40 facts before the question, one fact a message), as a table and a PNG, with how often the
answer changes when the question names the last person to move instead ("reads the name": a
model that answers from the order of the facts alone, never reading the name, scores 0%).
Beside them, the LSTM column of Weston et al. 2015 (Table 3, 1k training stories), for
orientation only: those are the official bAbI test files and a word-level LSTM; ours are
generated stories in bAbI's forms.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lstm_model import load_model  # noqa: E402
from lstm_model.data import encode_masked, encoded_offsets, render_chats  # noqa: E402
from lstm_model.evaluate import conversation_loss, whole_text_loss  # noqa: E402
from lstm_model.memory_tasks import ACK, COUNTS, PEOPLE, PLACES, TASKS, carry_drill, distance_probe, story  # noqa: E402
from lstm_model.session import ChatSession  # noqa: E402

# Weston et al. 2015, Table 3, LSTM, 1k training stories (% right)
WESTON_LSTM = {1: 50, 2: 20, 3: 20, 6: 48, 7: 49, 8: 45}
TASK_NAMES = {1: "1 single supporting fact", 2: "2 two supporting facts", 3: "3 three supporting facts",
              6: "6 yes/no", 7: "7 counting", 8: "8 lists/sets"}
DISTANCES = (0, 1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 35, 40)


def answers(model, conversation: dict, memory: bool, acks: list | None = None) -> list[tuple[dict, str]]:
    """(question, the model's answer) for each question of a conversation, sent turn by turn; with
    `acks`, (the conversation's acknowledgement, the model's) appended there for every other turn.
    Replies may run to 256 characters: a note-taking model's acknowledgements are sentences."""
    session = ChatSession(model, memory=memory, measure=False, greedy=True, max_new_chars=256, seed=0)
    asked = {q["turn"]: q for q in conversation["questions"]}
    replies = [m["content"] for m in conversation["messages"] if m["role"] == "assistant"]
    out = []
    for turn, message in enumerate(m["content"] for m in conversation["messages"] if m["role"] == "user"):
        reply = "".join(session.send(message)).strip()
        if turn in asked:
            out.append((asked[turn], reply))
        elif acks is not None:
            acks.append((replies[turn], reply))
    return out


def majority_answers(seed: int = 0, stories: int = 5000, people: int = len(PEOPLE), tasks=TASKS) -> dict[int, str]:
    """The most common answer of each task in the training stream (the split `build` trains on)."""
    rng, counts = random.Random(f"{seed}:train"), collections.defaultdict(collections.Counter)
    for _ in range(stories):
        for q in story(rng, people=people, tasks=tasks)["questions"]:
            counts[q["task"]][q["answer"]] += 1
    return {task: c.most_common(1)[0][0] for task, c in counts.items()}


STORY_BUCKETS = ((0, 2), (3, 5), (6, 10), (11, 20), (21, 40))  # facts back, for the stories' questions


def bucket(distance: int) -> str:
    return next(f"{lo}-{hi}" for lo, hi in STORY_BUCKETS if distance <= hi)


WRONG_WAYS = {"left_by": "where the one who dropped it is now", "others": "another object's place",
              "elsewhere": "another place", "no place": "not a place"}


def wrong_way(question: dict, reply: str) -> str:
    """What a wrong task-2 answer named instead (a key of WRONG_WAYS): the lures its row lists
    (`lstm_model.memory_tasks.question_row`), in that order, or any other place, or no place."""
    if reply == question["left_by"]:
        return "left_by"
    if reply in question["others"]:
        return "others"
    return "elsewhere" if reply in PLACES else "no place"


def score(model, conversations, memory: bool, by_distance: dict | None = None, acks: list | None = None) -> dict:
    """{task: (right, asked)}; with `by_distance`, the same per (task, facts-back bucket) there, and
    per (2, kind) for task 2's kinds (held, carried, left) and per ("wrong", way) the wrong task-2
    answers by what they named instead (`wrong_way`); with `acks`, every acknowledgement there
    (`answers`)."""
    right, total = collections.Counter(), collections.Counter()
    for conv in conversations:
        for q, reply in answers(model, conv, memory, acks):
            keys = [q["task"]]
            if by_distance is not None:
                keys += [(q["task"], bucket(q["distance"]))] + ([(2, q["kind"])] if q.get("kind") else [])
            if by_distance is not None and q["task"] == 2 and reply != q["answer"]:
                keys.append(("wrong", wrong_way(q, reply)))
            for key in keys:
                total[key] += 1
                right[key] += reply == q["answer"]
    if by_distance is not None:
        by_distance.update({key: (right[key], total[key]) for key in total if isinstance(key, tuple)})
    return {key: (right[key], total[key]) for key in total if not isinstance(key, tuple)}


def reads_the_name(model, probes) -> tuple[int, int]:
    """(answers that change, probes) when each probe's question names the last person to move
    instead, among probes where that person is elsewhere: whether the model reads the name."""
    changed = total = 0
    for probe in probes:
        users = [m["content"] for m in probe["messages"] if m["role"] == "user"]
        last_mover, last_place = users[-2].split(" ", 1)[0], users[-2].rsplit(" the ", 1)[1].rstrip(".")
        if last_place == probe["questions"][0]["answer"]:
            continue  # both answers are the same place: nothing to tell apart
        swapped = {"messages": probe["messages"][:-2] + [{"role": "user", "content": f"Where is {last_mover}?"},
                                                          {"role": "assistant", "content": last_place}],
                   "questions": probe["questions"]}
        [(_, asked)], [(_, other)] = answers(model, probe, True), answers(model, swapped, True)
        changed += asked != other
        total += 1
    return changed, total


def reply_losses(model, conversations) -> tuple[float, float]:
    """nats/char on the replies of `conversations`, rendered as the chat feeds them: (one long text,
    the state carried across conversations; each conversation from a fresh state)."""
    text, marks, starts = render_chats({"messages": [c["messages"] for c in conversations]}, "the held-out stories",
                                       (model.turn_separator, model.stop_sequence))
    ids, mask = encode_masked(model.vocab, text, marks)
    return whole_text_loss(model, ids, mask), conversation_loss(model, ids, encoded_offsets(model.vocab, text, starts), mask)


def pct(right: int, total: int) -> str:
    return f"{100 * right / total:.1f}%" if total else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/babi")
    p.add_argument("--stories", type=int, default=200, help="held-out conversations per way of asking")
    p.add_argument("--probes", type=int, default=30, help="task-1 probes per distance")
    p.add_argument("--seed", type=int, default=2024, help="the held-out stream (any seed: none is the training split's)")
    p.add_argument("--png", default=None, help="draw accuracy by distance to this file")
    p.add_argument("--people", type=int, default=len(PEOPLE), choices=range(1, len(PEOPLE) + 1),
                   help="stories about the first N people only (a curriculum stage's own task); default all four")
    p.add_argument("--tasks", type=int, nargs="+", default=list(TASKS), choices=list(TASKS),
                   help="ask only these tasks in the stories (a model trained on fewer); default all four")
    p.add_argument("--distances", type=int, nargs="+", default=list(DISTANCES), help="facts back for the probes")
    p.add_argument("--lead", type=int, default=3, help="probes begin with 0 to N facts about anyone (default 3)")
    p.add_argument("--drill", type=int, default=0, metavar="N",
                   help="also N binding drills (two people, one move each, both asked in random order): how often the "
                        "first question is right, where a model that knows both places but not whose gets half")
    p.add_argument("--carry", type=int, default=0, metavar="N",
                   help="also N carrying drills (memory_tasks.carry_drill: people get and drop things, every object and "
                        "carrier asked): task 2 right, and task 7 right per true count")
    p.add_argument("--probes-only", action="store_true", help="only the table by distance (quicker: checkpoints)")
    p.add_argument("--babi", metavar="DIR_OR_HUB_ID",
                   help="bAbI's own stories instead of generated ones: a folder of its *_train.txt files or a Hub "
                        "dataset id (facebook/babi_qa); measured on the last 10%% of each training file")
    p.add_argument("--babi-tasks", type=int, nargs="+", default=[1, 2, 3, 6, 7, 8], choices=[1, 2, 3, 6, 7, 8])
    p.add_argument("--babi-stories", type=int, default=0, metavar="N",
                   help="with --babi: at most N held-out stories a task (default 0: all)")
    p.add_argument("--notes", action="store_true",
                   help="the model was trained with note-taking acknowledgements (memory_tasks --notes): the held-out "
                        "conversations' right replies have them too, and how often the model's own notes are right "
                        "is counted")
    args = p.parse_args(argv)
    if args.people < 2 and any(args.distances):
        args.distances = [0]  # one person: nobody else moves in between
    torch.set_num_threads(1)  # short messages and single steps: one thread is fastest (benchmarks/README.md)
    model = load_model(args.model)
    t0 = time.perf_counter()
    if args.babi:
        official_table(model, args)
    elif not args.probes_only:
        stories_table(model, args)
    probes_table(model, args)
    if args.drill:
        drill_line(model, args)
    if args.carry:
        carry_line(model, args)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


def stories_table(model, args) -> None:
    """Accuracy per task on held-out stories, three ways, and the replies' loss both ways."""
    rng, tasks = random.Random(f"benchmark:{args.seed}"), tuple(args.tasks)
    one = [story(rng, max_per_message=1, people=args.people, tasks=tasks, notes=args.notes) for _ in range(args.stories)]
    several = [story(rng, max_per_message=3, people=args.people, tasks=tasks, notes=args.notes)
               for _ in range(args.stories)]
    by_distance, acks = {}, []
    carried, off = score(model, one, True, by_distance, acks), score(model, one, False)
    grouped = score(model, several, True)
    majority = majority_answers(people=args.people, tasks=tasks)
    majority_right = collections.Counter()
    for conv in one:
        for q in conv["questions"]:
            majority_right[q["task"]] += q["answer"] == majority[q["task"]]
    print(f"model: {args.model}; {args.stories} held-out conversations each way (up to 40 facts, "
          f"{args.people} of the 4 people), greedy answers\n")
    print("| task | questions | memory carried | memory off | majority answer | facts 1-3 per message, carried "
          "| Weston et al. LSTM (1k, official) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for task in tasks:
        r, n = carried.get(task, (0, 0))
        print(f"| {TASK_NAMES[task]} | {n} | **{pct(r, n)}** | {pct(*off.get(task, (0, 0)))} | "
              f"{pct(majority_right[task], n)} ('{majority[task]}') | {pct(*grouped.get(task, (0, 0)))} | "
              f"{WESTON_LSTM[task]}% |")
    buckets = [bucket(hi) for _, hi in STORY_BUCKETS]
    print("\nThe same questions (memory carried, one fact a message) by facts back from the fact that answers "
          "them (task 2: the later of the object's last get or drop and its holder's last move; task 7: the "
          "person's last get or drop), right / asked:\n")
    print("| task | " + " | ".join(buckets) + " |")
    print("| --- |" + " --- |" * len(buckets))
    for task in tasks:
        cells = [by_distance.get((task, b), (0, 0)) for b in buckets]
        print(f"| {TASK_NAMES[task]} | " + " | ".join(f"{pct(r, n)} ({r}/{n})" if n else "-" for r, n in cells) + " |")
    kinds = ", ".join(f"{name} {pct(*by_distance[(2, kind)])} ({by_distance[(2, kind)][1]})" for kind, name in (
        ("held", "held (its holder has not moved since)"), ("carried", "carried (its holder moved since)"),
        ("left", "left (dropped: where the one who dropped it was)")) if (2, kind) in by_distance)
    if kinds:
        print(f"\nTask 2 by where the object is: {kinds}.")
    wrong = {way: by_distance[("wrong", way)][1] for way in WRONG_WAYS if ("wrong", way) in by_distance}
    if wrong:
        print(f"Wrong task-2 answers ({sum(wrong.values())}) named " + ", ".join(
            f"{WRONG_WAYS[way]} {n}" for way, n in wrong.items()) + ".")
    if args.notes:
        noted = [(want, got) for want, got in acks if want != ACK]
        print(f"\nAcknowledgements written exactly right (memory carried, one fact a message): all "
              f"{pct(sum(w == g for w, g in acks), len(acks))} of {len(acks)}; those with a note (a get, a drop or a "
              f"move carrying something) {pct(sum(w == g for w, g in noted), len(noted))} of {len(noted)}.")
    long_text, fresh = reply_losses(model, one)
    print(f"\nLoss on the right replies of the same conversations: {long_text:.4f} nats/char read as one long text "
          f"(the state carried across conversations), {fresh:.4f} each from a fresh state (as the chat starts).")


# The Entity Network (Henaff et al. 2017, "Tracking the World State with Recurrent Entity Networks"),
# 10k training stories: 100% minus its per-task error on the test files (0, 0.1, 4.1, 0.2, 0, 0.5).
BEST_10K = {1: 100.0, 2: 99.9, 3: 95.9, 6: 99.8, 7: 100.0, 8: 99.5}
ENTNET_NOTE = ("Henaff et al. 2017, 10k training stories, the first model to solve all 20 tasks (at most 5% error "
               "each)")


def official_table(model, args) -> None:
    """bAbI's own held-out stories (the last 10% of each training file), per task: memory carried,
    memory off, majority answer, as typed; "I don't know." for what was never told; notes right."""
    from lstm_model import babi_qa

    stories = babi_qa.load_stories(args.babi, tuple(args.babi_tasks))
    held, majority = {}, {}
    for task, told in stories.items():
        train, validation = babi_qa.split(told)
        held[task] = validation[:args.babi_stories] if args.babi_stories else validation
        counts = collections.Counter(line.answer for s in train for line in s.lines if line.answer is not None)
        majority[task] = counts.most_common(1)[0][0]
    rng = random.Random(f"official:{args.seed}")
    convs = {t: [babi_qa.conversation(s, random.Random(f"{args.seed}:{t}:{i}"), notes=args.notes)
                 for i, s in enumerate(held[t])] for t in held}
    typed = {t: [typed_conversation(c, rng) for c in cs] for t, cs in convs.items()}
    print(f"model: {args.model}; bAbI's own stories from {args.babi}, the last 10% of each training file "
          "(held out from training), one fact a message, greedy answers\n")
    print("| task | questions | memory carried | memory off | majority answer | as typed, carried "
          "| Weston et al. 2015 LSTM (1k) | Entity Network (10k) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    acks, unknown, fresh = [], collections.Counter(), collections.Counter()
    for task in held:
        on = tally(official_answers(model, c, True, acks, unknown) for c in convs[task])
        alone = [official_answers(model, c, False) for c in convs[task]]
        off = tally(alone)
        fresh.update(reply == babi_qa.DONT_KNOW for pairs in alone for _, reply in pairs)
        as_typed = tally(official_answers(model, c, True) for c in typed[task])
        right = sum(q["answer"] == majority[task] for c in convs[task] for q in c["questions"])
        print(f"| {TASK_NAMES[task]} | {on[1]} | **{pct(*on)}** | {pct(*off)} | {pct(right, on[1])} "
              f"('{majority[task]}') | {pct(*as_typed)} | {WESTON_LSTM[task]}% | {BEST_10K[task]}% |", flush=True)
    print(f"\nEntity Network: {ENTNET_NOTE}. Weston et al. 2015: Table 3, a word-level LSTM. Both on bAbI's test files.")
    print(f"\n\"I don't know.\" where it is right: about someone or something never mentioned yet, asked mid-story "
          f"(the same memory, the question then undone) {pct(unknown[True], sum(unknown.values()))} of "
          f"{sum(unknown.values())}; every question of the held-out stories asked of a fresh memory (memory off) "
          f"{pct(fresh[True], sum(fresh.values()))} of {sum(fresh.values())}.")
    if args.notes:
        noted = [(want, got) for want, got in acks if want != babi_qa.ACK]
        print(f"Acknowledgements written exactly right: all {pct(sum(w == g for w, g in acks), len(acks))} of "
              f"{len(acks)}; with a note {pct(sum(w == g for w, g in noted), len(noted))} of {len(noted)}.")


def tally(conversations) -> tuple[int, int]:
    """(right, asked) over the (question, reply) pairs of several conversations."""
    pairs = [pair for conv in conversations for pair in conv]
    return sum(reply == q["answer"] for q, reply in pairs), len(pairs)


def official_answers(model, conv: dict, memory: bool, acks: list | None = None,
                     unknown: collections.Counter | None = None) -> list[tuple[dict, str]]:
    """(question, reply) for each question of one of bAbI's stories, one fact a message. Memory off:
    only the questions are sent (each is read from a fresh state: the facts cannot matter). With
    `acks`, (right acknowledgement, the model's) for every fact; with `unknown`, after each
    question the same memory is also asked about someone or something never told (when there is
    one), counted by whether it answered "I don't know.", and the question undone."""
    from lstm_model.babi_qa import DONT_KNOW, Reader

    session = ChatSession(model, memory=memory, measure=False, greedy=True, max_new_chars=256, seed=0)
    asked = {q["turn"]: q for q in conv["questions"]}
    replies = [m["content"] for m in conv["messages"] if m["role"] == "assistant"]
    reader, out = Reader(), []
    for turn, text in enumerate(m["content"] for m in conv["messages"] if m["role"] == "user"):
        if turn not in asked and not memory:
            continue
        reply = "".join(session.send(text)).strip()
        if turn in asked:
            out.append((asked[turn], reply))
            question = reader.unknown_question(random.Random(f"{turn}:{text}")) if unknown is not None else None
            if question is not None:
                unknown[("".join(session.send(question)).strip() == DONT_KNOW)] += 1
                session.undo()
        else:
            if unknown is not None:
                reader.read(text)
            if acks is not None:
                acks.append((replies[turn], reply))
    return out


def typed_conversation(conv: dict, rng: random.Random) -> dict:
    """The same conversation with its user messages as people type them (babi_qa.typed_variant)."""
    from lstm_model.babi_qa import typed_variant

    return {"messages": [{**m, "content": typed_variant(m["content"], rng)} if m["role"] == "user" else m
                         for m in conv["messages"]], "questions": conv["questions"]}


def drill_line(model, args) -> None:
    """The shortest binding drill: the first question's answers and all answers right."""
    rng, first = random.Random(f"drill:{args.seed}"), 0
    right = total = 0
    for _ in range(args.drill):
        replies = answers(model, distance_probe(rng, 1, lead=0, people=2, also_ask_last=True), True)
        first += replies[0][1] == replies[0][0]["answer"]
        right += sum(reply == q["answer"] for q, reply in replies)
        total += len(replies)
    print(f"\nBinding drill ({args.drill} conversations: two people, one move each, both asked in random order): "
          f"first question right {pct(first, args.drill)} (knowing both places but not whose: 50%), "
          f"all answers {pct(right, total)}.")


def carry_line(model, args) -> None:
    """Carrying drills: task 2 right, and task 7 right for each true count (a model that answers
    `none` to every count gets that column only)."""
    rng = random.Random(f"carry:{args.seed}")
    right, total = collections.Counter(), collections.Counter()
    for _ in range(args.carry):
        for q, reply in answers(model, carry_drill(rng, people=args.people, notes=args.notes), True):
            key = "task 2" if q["task"] == 2 else f"count {q['answer']}"
            right[key] += reply == q["answer"]
            total[key] += 1
    cells = ", ".join(f"{k} {pct(right[k], total[k])} of {total[k]}" for k in sorted(total, key=lambda k: (
        k != "task 2", COUNTS.index(k.split()[1]) if k.startswith("count") else 0)))
    print(f"\nCarrying drills ({args.carry} conversations: everyone placed, one or two people get and drop things, "
          f"every object and carrier asked): {cells}.")


def probes_table(model, args) -> None:
    """Task 1 by distance: the table, and the curve with --png."""
    rows = []
    prng = random.Random(f"probe:{args.seed}")
    for d in args.distances:
        probes = [distance_probe(prng, d, args.lead, people=args.people) for _ in range(args.probes)]
        on, no = score(model, probes, True).get(1, (0, 0)), score(model, probes, False).get(1, (0, 0))
        rows.append((d, on, no, reads_the_name(model, probes) if d and args.people > 1 else None))
    print(f"\nTask 1 by distance (facts told between the supporting fact and the question), {args.probes} "
          "probes each, one fact a message; \"reads the name\": of the probes where the person asked about and the "
          "last to move are in different places, how often the answer changes when the question names the last to "
          "move instead (a model that ignores the name answers both alike: 0%):\n")
    print("| facts back | memory carried | memory off | reads the name |")
    print("| --- | --- | --- | --- |")
    for d, on, no, reads in rows:
        print(f"| {d} | {pct(*on)} | {pct(*no)} | {pct(*reads) if reads else '-'} |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        ax.plot([r[0] for r in rows], [100 * r[1][0] / max(1, r[1][1]) for r in rows], "o-", label="memory carried")
        ax.plot([r[0] for r in rows], [100 * r[2][0] / max(1, r[2][1]) for r in rows], "s--", color="grey",
                label="memory off")
        ax.axhline(100 / 6, color="grey", lw=0.8, ls=":", label="chance (1 of 6 places)")
        ax.set(xlabel="facts between the supporting fact and the question", ylabel="right answers (%)", ylim=(0, 102),
               title=f"Where is ...? ({os.path.basename(args.model.rstrip('/'))})")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)  # below: never over a line
        fig.tight_layout()
        fig.savefig(args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    sys.exit(main())
