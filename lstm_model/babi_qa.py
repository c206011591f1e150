"""bAbI's own training stories as chat: the official files (or `facebook/babi_qa` on the Hub) read
into stories, every answer checked by a reader of the facts, and each story written as a
conversation, optionally with note-taking acknowledgements and "I don't know." questions.

    python -m lstm_model.babi_qa --babi DIR_OR_HUB_ID --out FOLDER [--stage STAGE.json] [--tasks 1 2 3 6 7 8]
                                 [--notes] [--dont-know 0.1] [--typed 0.2] [--repeat-task3 N] [--seed 0]
                                 [--generated N] [--generated-facts 40]

A stage file (JSON, its "data" object: the fields of `StoryMix`) names a whole mix at once; flags
given beside it change those fields. benchmarks/stages/ holds the stages of the bundled model.

Tasks (bAbI's numbers): 1, where a person is; 2, where an object is; 3, where an object was before
a place; 6, yes/no; 7, counting; 8, lists ("What is Mary carrying?" -> "football,milk", in the
order each was first got, or "nothing"). Only the training files are ever read: the official
test files are for measuring, elsewhere, so nothing here may be tuned to them. The last 10% of each
task's stories is held out as validation, as the papers do.

`Reader` is the world the facts describe (where each person is, what each carries, where each
object has been); `benchmarks/babi_reader_check.py` proves it answers every official question as
bAbI does. Its notes ("So the football is in the garden, before the kitchen." "So Mary has the
football,milk.") write down what a fact changed, so that a later answer is a look back at one note.
`generate_story` tells new stories in every official fact form, each answer the reader's
(`--generated`: that many more training stories per task, longer ones and more of task 3).
The result is a `datasets.DatasetDict` (train, validation) with `messages` and `questions` columns
in `memory_tasks`'s schema: `python -m lstm_model.train --dataset FOLDER --loss-on replies` reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import json
import os
import random
import re
import sys
from dataclasses import dataclass, field

from .memory_tasks import (
    ACK,
    COUNTS,
    OBJECTS,
    PEOPLE,
    PLACES,
    PROBE_TASKS,
    acknowledge,
    distance_probe,
    question_row,
    render,
)

TASKS = (1, 2, 3, 6, 7, 8)
# The local file names of each task, best first: the 10k stories where bAbI has them for us, else the
# 1k (task 3 is kept at 1k only); all in one folder, or in the archive's en-10k/ and en/.
FILE_PATTERNS = ("en-10k_qa{task}_*_train.txt", os.path.join("en-10k", "qa{task}_*_train.txt"),
                 "en_qa{task}_*_train.txt", os.path.join("en", "qa{task}_*_train.txt"))
HUB_CONFIGS = {1: "en-10k-qa1", 2: "en-10k-qa2", 3: "en-qa3", 6: "en-10k-qa6", 7: "en-10k-qa7", 8: "en-10k-qa8"}
VALIDATION_SHARE = 10  # the last 1/10 of each task's stories: validation
DONT_KNOW = "I don't know."
NOTE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ,.")
NOTE_MAX = 96  # the longest note: an object, its place and three earlier ones (about 80 characters)
EARLIER_PLACES = 3  # a note's earlier places, most recent first

_P, _O, _L = "|".join(PEOPLE), "|".join(OBJECTS), "|".join(PLACES)
MOVE = re.compile(rf"^({_P}) (?:moved to|went to|journeyed to|travelled to|went back to) the ({_L})\.$")
GET = re.compile(rf"^({_P}) (?:got|took|picked up|grabbed) the ({_O})(?: there)?\.$")
DROP = re.compile(rf"^({_P}) (?:dropped|discarded|put down|left) the ({_O})(?: there)?\.$")
GIVE = re.compile(rf"^({_P}) (?:passed|handed|gave) the ({_O}) to ({_P})\.$")
WHERE_PERSON = re.compile(rf"^Where is ({_P})\?$")
WHERE_OBJECT = re.compile(rf"^Where is the ({_O})\?$")
BEFORE = re.compile(rf"^Where was the ({_O}) before the ({_L})\?$")
IS_IN = re.compile(rf"^Is ({_P}) in the ({_L})\?$")
COUNT = re.compile(rf"^How many objects is ({_P}) carrying\?$")
LIST = re.compile(rf"^What is ({_P}) carrying\?$")


# -- stories --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a story: a fact (`answer` None) or a question with its answer and the ids of the
    facts that support it. `id` is the line's number in its story, as the file writes it."""

    id: int
    text: str
    answer: str | None = None
    support: tuple[int, ...] = ()


@dataclass(frozen=True)
class Story:
    task: int
    lines: tuple[Line, ...]


def train_file(path: str) -> str:
    """`path`, if it names one of bAbI's training files; else ValueError. Every file this module
    opens passes here: the official test files are never read, so nothing built from this module
    can be tuned to them."""
    if not os.path.basename(path).endswith("_train.txt"):
        raise ValueError(f"{path} is not a bAbI training file (*_train.txt); only training files are read, "
                         "never the test files.")
    return path


def read_file(path: str, task: int) -> list[Story]:
    """The stories of one official training file, in the file's order (a line numbered 1 begins a
    story). Question text is stripped, as `facebook/babi_qa` strips it (the files put a space before
    the tab)."""
    train_file(path)
    if not os.path.isfile(path):
        raise ValueError(f"There is no bAbI training file {path}.")
    stories, lines = [], []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            head, _, rest = raw.strip().partition(" ")
            if not head.isdigit() or not rest:
                raise ValueError(f"{path} line {number} is not in bAbI's 'ID text' form: {raw.strip()[:60]!r}.")
            if head == "1" and lines:
                stories.append(Story(task, tuple(lines)))
                lines = []
            fields = rest.split("\t")
            if len(fields) == 1:
                lines.append(Line(int(head), fields[0].strip()))
            elif len(fields) == 3:
                support = tuple(int(i) for i in fields[2].split())
                lines.append(Line(int(head), fields[0].strip(), fields[1].strip(), support))
            else:
                raise ValueError(f"{path} line {number} has {len(fields)} tab-separated fields; a question has 3 "
                                 "(question, answer, supporting ids).")
    if lines:
        stories.append(Story(task, tuple(lines)))
    return stories


def story_from_row(row: dict, task: int) -> Story:
    """A `facebook/babi_qa` row (a `story` of parallel lists: id, type 0 fact / 1 question, text,
    answer, supporting_ids) as the same `Story` the file gives."""
    s = row["story"]
    lines = []
    for sid, kind, text, answer, support in zip(s["id"], s["type"], s["text"], s["answer"], s["supporting_ids"]):
        if int(kind) == 0:
            lines.append(Line(int(sid), text.strip()))
        else:
            lines.append(Line(int(sid), text.strip(), answer.strip(), tuple(int(i) for i in support if str(i).strip())))
    return Story(task, tuple(lines))


def task_file(folder: str, task: int) -> str:
    """The training file of `task` in `folder`: the 10k stories where present, else the 1k."""
    for pattern in FILE_PATTERNS:
        found = sorted(glob.glob(os.path.join(glob.escape(folder), pattern.format(task=task))))
        if found:
            return train_file(found[0])
    raise ValueError(f"{folder} has no training file for bAbI task {task} "
                     f"(looked for {FILE_PATTERNS[0].format(task=task)} and {FILE_PATTERNS[2].format(task=task)}).")


def _hub_stories(source: str, task: int, revision: str | None) -> list[Story]:
    import datasets

    from .data import hub_reachable

    config, was_offline = HUB_CONFIGS[task], datasets.config.HF_HUB_OFFLINE
    try:
        # Offline only a local cache can help: make `datasets` fail at once instead of retrying.
        datasets.config.HF_HUB_OFFLINE = was_offline or not hub_reachable()
        rows = datasets.load_dataset(source, config, split="train", revision=revision)
    except Exception as err:
        first = str(err).splitlines()[0][:160] if str(err) else ""
        raise ValueError(f"Could not load {source!r} ({config}, train) from the Hugging Face Hub ({type(err).__name__}: "
                         f"{first}), and it is not a local folder either; give the folder of bAbI's *_train.txt files "
                         "or a reachable Hub dataset id.") from None
    finally:
        datasets.config.HF_HUB_OFFLINE = was_offline
    return [story_from_row(row, task) for row in rows]


def load_stories(source: str, tasks=TASKS, revision: str | None = None) -> dict[int, list[Story]]:
    """Each task's training stories, in the file's order, from `source`: a local folder of the
    official files (`task_file`) or a Hub dataset id such as `facebook/babi_qa` (configs
    `en-10k-qaN`, task 3 `en-qa3`, split train). Both give the same stories."""
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"bAbI task {task} is not read here; the tasks are {', '.join(map(str, TASKS))}.")
    if source.endswith(".txt") or os.path.isfile(source):  # a test file is refused by its name, there or not
        train_file(source)
        raise ValueError(f"{source} names a file; give the folder that holds bAbI's *_train.txt files.")
    if os.path.isdir(source):
        return {task: read_file(task_file(source, task), task) for task in tasks}
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
        raise ValueError(f"There is no folder {source}; give the folder of bAbI's *_train.txt files or a Hub dataset id.")
    return {task: _hub_stories(source, task, revision) for task in tasks}


def split(stories: list, share: int = VALIDATION_SHARE) -> tuple[list, list]:
    """(train, validation): the last 1/`share` of the stories held out (none of fewer than `share`),
    as the papers hold out the end of each training file."""
    cut = len(stories) - len(stories) // share
    return stories[:cut], stories[cut:]


# -- the reader -----------------------------------------------------------------------------------


class Reader:
    """The world bAbI's facts describe, read one fact at a time: where each person is, what each
    carries (in the order each was first got, however often dropped and got again since: task 8
    lists it so), and each object's places (consecutive
    repeats removed: task 3 looks back along it). An object's place changes when whoever holds it
    moves, or when someone whose place is known gets it. `answer` answers every question form and
    says "I don't know." where the facts so far do not settle the answer."""

    def __init__(self):
        self.facts = 0  # facts read
        self.place: dict[str, str] = {}  # person -> place
        self.moved_at: dict[str, int] = {}  # person -> index of the fact that put them there
        self.named: set[str] = set()  # people named in any fact (whose carrying is known: nothing, at first)
        self.holds: dict[str, list[str]] = {}  # person -> objects held, in the order task 8 lists them
        self.first_got: dict[str, dict[str, int]] = {}  # person -> object -> index of the fact they first got it
        self.history: dict[str, list[str]] = {}  # object -> its places, consecutive repeats removed
        self.object_at: dict[str, int] = {}  # object -> index of the fact that last got, dropped or passed it
        self.dropped_by: dict[str, str] = {}  # object lying somewhere -> who left it there

    # facts

    def read(self, fact: str) -> tuple[list[str], list[str]]:
        """Apply `fact`: (objects to note, people whose carried objects changed), for the notes. The
        objects to note are the one a get, drop or hand-over names and every one a mover carries,
        wherever their place is known, whether or not it changed: so whether a fact is noted
        depends on its form alone, never on where an object was before (a model writing its own
        notes would otherwise have to recall that first). ValueError for a sentence in none of
        bAbI's fact forms."""
        index, self.facts = self.facts, self.facts + 1
        if m := MOVE.match(fact):
            who, where = m[1], m[2]
            self.named.add(who)
            self.place[who], self.moved_at[who] = where, index
            for thing in self.holds.get(who, []):
                self._put(thing, where)
            return list(self.holds.get(who, [])), []
        if m := GET.match(fact):
            return self._take(m[1], m[2], index)
        if m := DROP.match(fact):
            who, thing = m[1], m[2]
            self.named.add(who)
            if thing in self.holds.get(who, []):
                self.holds[who].remove(thing)
            self.object_at[thing], self.dropped_by[thing] = index, who
            if who in self.place:
                self._put(thing, self.place[who])
            return self._known([thing]), [who]
        if m := GIVE.match(fact):
            giver, thing, taker = m[1], m[2], m[3]
            self.named.add(giver)
            moved, changed = self._take(taker, thing, index)
            return moved, [giver] + [p for p in changed if p != giver]
        raise ValueError(f"Not a fact in bAbI's forms: {fact!r}.")

    def _take(self, who: str, thing: str, index: int) -> tuple[list[str], list[str]]:
        """`who` now holds `thing` (got, or handed over): taken from whoever held it."""
        self.named.add(who)
        changed = [p for p, held in self.holds.items() if thing in held and p != who]
        for p in changed:
            self.holds[p].remove(thing)
        first = self.first_got.setdefault(who, {})
        first.setdefault(thing, index)
        held = self.holds.setdefault(who, [])
        if thing not in held:  # in the order they first got each, however often dropped and got again since
            held.append(thing)
            held.sort(key=first.__getitem__)
        self.object_at[thing] = index
        self.dropped_by.pop(thing, None)
        if who in self.place:
            self._put(thing, self.place[who])
        return self._known([thing]), changed + [who]

    def _known(self, things: list[str]) -> list[str]:
        return [t for t in things if self.where_object(t) is not None]

    def _put(self, thing: str, where: str) -> bool:
        """`thing` is now in `where`: whether that is a new place for it."""
        places = self.history.setdefault(thing, [])
        if places and places[-1] == where:
            return False
        places.append(where)
        return True

    # what the facts say

    def holder(self, thing: str) -> str | None:
        return next((p for p, held in self.holds.items() if thing in held), None)

    def where_object(self, thing: str) -> str | None:
        places = self.history.get(thing)
        return places[-1] if places else None

    def before(self, thing: str, where: str) -> str | None:
        """Where `thing` was just before it last came to `where` (None: never there, or nowhere known before)."""
        places = self.history.get(thing, [])
        last = max((i for i, p in enumerate(places) if p == where), default=0)
        return places[last - 1] if last > 0 else None

    def carrying(self, who: str) -> list[str] | None:
        """What `who` carries, in the order they got it; None for someone never named (nothing is known)."""
        return list(self.holds.get(who, [])) if who in self.named else None

    def answer(self, question: str) -> str:
        """The answer to a question in one of bAbI's six forms, or "I don't know."."""
        answer = None
        if m := WHERE_PERSON.match(question):
            answer = self.place.get(m[1])
        elif m := WHERE_OBJECT.match(question):
            answer = self.where_object(m[1])
        elif m := BEFORE.match(question):
            answer = self.before(m[1], m[2])
        elif m := IS_IN.match(question):
            answer = None if m[1] not in self.place else "yes" if self.place[m[1]] == m[2] else "no"
        elif m := COUNT.match(question):
            carried = self.carrying(m[1])
            answer = None if carried is None else COUNTS[len(carried)]
        elif m := LIST.match(question):
            carried = self.carrying(m[1])
            answer = None if carried is None else ",".join(carried) or "nothing"
        else:
            raise ValueError(f"Not a question in bAbI's forms: {question!r}.")
        return DONT_KNOW if answer is None else answer

    def details(self, question: str) -> tuple[str | None, str | None, list[str] | None]:
        """A question's (kind, left_by, others) for its `questions` row. "Where is the O?": as
        `memory_tasks.World.asked`: held (its holder has not moved since getting it), carried (the
        holder moved since) or left, with where the one who left it is now and where the other
        objects are (the places a wrong answer is likely to name). "Where was the O before the L?":
        current (L is where the object is now) or earlier (an older place: a longer look back)."""
        if m := WHERE_OBJECT.match(question):
            thing, holder = m[1], self.holder(m[1])
            if holder is None:
                kind = "left"
            else:
                kind = "carried" if self.moved_at.get(holder, -1) > self.object_at.get(thing, -1) else "held"
            left_by = self.place.get(self.dropped_by.get(thing, "")) if kind == "left" else None
            others = [self.where_object(o) for o in OBJECTS if o != thing and self.where_object(o)]
            return kind, left_by, others
        if m := BEFORE.match(question):
            return ("current" if self.where_object(m[1]) == m[2] else "earlier"), None, None
        return None, None, None

    # notes

    def notes(self, moved: list[str], changed: list[str]) -> list[str]:
        """What a fact changed, written down: each object that moved, with up to three earlier
        places, most recent first ("So the football is in the garden, before the kitchen, the
        office."), then each person whose carrying changed ("So Mary has the football,milk." / "So
        Mary has nothing."). In the characters the facts and answers use already (letters, space,
        comma, full stop), so notes widen no vocabulary."""
        out = []
        for thing in moved:
            places = self.history[thing]
            note = f"So the {thing} is in the {places[-1]}"
            earlier = places[-1 - EARLIER_PLACES:-1][::-1]
            if earlier:
                note += ", before " + ", ".join(f"the {p}" for p in earlier)
            out.append(note + ".")
        for who in changed:
            held = self.holds.get(who, [])
            out.append(f"So {who} has {'the ' + ','.join(held) if held else 'nothing'}.")
        for note in out:
            check_note(note)
        return out

    # questions whose answer is not known

    def unknown_questions(self) -> dict[str, list[str]]:
        """Per question form, the questions the facts so far leave open ("I don't know."): about
        people never placed (where, yes/no) or never named (how many, what) and objects with no
        place known (where, where before). Not "before" a place an object never came to: that is
        the question task 3 answers from the object's notes, and a model taught to say "I don't
        know." to most "before" questions learns that as the form's answer."""
        forms = {
            "where person": [f"Where is {p}?" for p in PEOPLE if p not in self.place],
            "is in": [f"Is {p} in the {place}?" for p in PEOPLE if p not in self.place for place in PLACES],
            "count": [f"How many objects is {p} carrying?" for p in PEOPLE if p not in self.named],
            "list": [f"What is {p} carrying?" for p in PEOPLE if p not in self.named],
            "where object": [f"Where is the {o}?" for o in OBJECTS if self.where_object(o) is None],
            "before": [f"Where was the {o} before the {place}?" for o in OBJECTS for place in PLACES
                       if self.where_object(o) is None],
        }
        return {form: questions for form, questions in forms.items() if questions}

    def unknown_question(self, rng: random.Random) -> str | None:
        """One question the facts leave open: a form drawn first (so the forms vary even where one
        of them has many open questions), then a question of it; None if every answer is known."""
        forms = self.unknown_questions()
        if not forms:
            return None
        return rng.choice(forms[rng.choice(sorted(forms))])


QUESTION_STARTS = ("where ", "is ", "how ", "what ")


def canonical(text: str) -> str:
    """A message as people type it ("where is  mary", "Mary went to the kitchen") in bAbI's own
    spelling ("Where is Mary?", "Mary went to the kitchen."): lower case, single spaces, the names
    capitalised, a first capital and the final "?" or "."."""
    words = " ".join(text.lower().split()).rstrip(".?! ").split(" ")
    words = [w.capitalize() if w.capitalize() in PEOPLE else w for w in words]
    sentence = " ".join(words)
    end = "?" if sentence.startswith(QUESTION_STARTS) else "."
    return sentence[:1].upper() + sentence[1:] + end


def right_answers(messages: list[str]) -> list[str | None]:
    """For each message of a conversation, the answer the facts told so far give, if it is a
    question in bAbI's forms ("I don't know." where they do not say); None for a fact, and for
    every question once a message was in none of bAbI's forms (the world is then not known)."""
    reader, known, out = Reader(), True, []
    for text in messages:
        sentence = canonical(text)
        try:
            out.append(reader.answer(sentence) if known else None)
            continue
        except ValueError:  # not a question: a fact, or neither
            out.append(None)
        try:
            reader.read(sentence)
        except ValueError:
            known = False
    return out


def check_note(note: str) -> str:
    """`note`, if it is short and in the characters notes may use; else ValueError. A note is part
    of every acknowledgement the model learns to write: a stray character widens the vocabulary,
    a long note costs characters at every fact."""
    odd = sorted(set(note) - NOTE_CHARS)
    if odd or len(note) > NOTE_MAX:
        raise ValueError(f"A note must be at most {NOTE_MAX} letters, spaces, commas and full stops: {note!r}.")
    return note


# -- conversations --------------------------------------------------------------------------------


def typed_variant(text: str, rng: random.Random) -> str:
    """`text` as people type it: without its final "." or "?" (chance 0.3), all lower case (0.2),
    a doubled space between two words (0.1), a trailing space (0.1); independent draws, the same
    for the same `rng`. A model that meets only bAbI's exact sentences can fail on a question
    typed without its question mark."""
    drop, lower, double, trail = rng.random(), rng.random(), rng.random(), rng.random()
    if drop < 0.3 and text.endswith((".", "?")):
        text = text[:-1]
    if lower < 0.2:
        text = text.lower()
    if double < 0.1:
        gaps = [i for i, c in enumerate(text) if c == " "]
        if gaps:
            at = rng.choice(gaps)
            text = text[:at] + " " + text[at:]
    if trail < 0.1:
        text += " "
    return text


def conversation(story: Story, rng: random.Random | None = None, notes: bool = False, dont_know: float = 0.0,
                 typed: float = 0.0) -> dict:
    """A story as a conversation: one fact a user message, acknowledged ("OK.", with the reader's
    notes where `notes`); each question answered with its official answer (checked against the
    reader: a story it could not follow would get wrong notes). With `dont_know`, a chance per fact
    (and once before the first) of a question the facts leave open, answered "I don't know."; with
    `typed`, a chance per user message of `typed_variant`. No draw is made for a chance of 0.

    `questions` rows (`memory_tasks.question_row`): the turn, the task, the answer, the distance
    (facts told between the last supporting fact and the question; for an open question, all the
    facts told: none answers it), the kind (`Reader.details`; "unknown" with task 0 for the open
    questions, so a benchmark can count them apart)."""
    rng = rng or random.Random(0)
    reader, messages, questions, fact_of = Reader(), [], [], {}

    def say(user: str, reply: str) -> None:
        if typed and rng.random() < typed:
            user = typed_variant(user, rng)
        messages.extend([{"role": "user", "content": user}, {"role": "assistant", "content": reply}])

    def maybe_unknown() -> None:
        if dont_know and rng.random() < dont_know:
            question = reader.unknown_question(rng)
            if question is not None:
                questions.append(question_row(len(messages) // 2, 0, DONT_KNOW, reader.facts, "unknown"))
                say(question, DONT_KNOW)

    maybe_unknown()
    for line in story.lines:
        if line.answer is None:
            moved, changed = reader.read(line.text)
            fact_of[line.id] = reader.facts - 1
            say(line.text, acknowledge(reader.notes(moved, changed)) if notes else ACK)
            maybe_unknown()
            continue
        if reader.answer(line.text) != line.answer:
            raise ValueError(f"The reader answers {reader.answer(line.text)!r} where bAbI task {story.task} answers "
                             f"{line.answer!r} to {line.text!r} (story line {line.id}).")
        last = max((fact_of[i] for i in line.support if i in fact_of), default=reader.facts - 1)
        kind, left_by, others = reader.details(line.text)
        questions.append(question_row(len(messages) // 2, story.task, line.answer, reader.facts - 1 - last, kind,
                                      left_by, others))
        say(line.text, line.answer)
    return {"messages": messages, "questions": questions}


# -- new stories ----------------------------------------------------------------------------------

MOVE_VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
GET_VERBS = ("got", "took", "picked up", "grabbed")
DROP_VERBS = ("dropped", "discarded", "put down", "left")
GIVE_VERBS = ("passed", "handed", "gave")
# Each task's shares of moves, gets, drops and hand-overs, as its official training file has them
# (counted there; only task 7 hands objects over), and the weights a generated fact's kind is drawn
# with, found so that the shares come out as these: a get, drop or hand-over is often impossible
# (nothing to get in one's place, nothing held), so each is drawn more often than it happens.
FACT_SHARES = {1: {"move": 1.0}, 2: {"move": 0.65, "get": 0.20, "drop": 0.15},
               3: {"move": 0.64, "get": 0.19, "drop": 0.17}, 6: {"move": 0.68, "get": 0.21, "drop": 0.11},
               7: {"move": 0.60, "get": 0.18, "drop": 0.09, "give": 0.13},
               8: {"move": 0.66, "get": 0.21, "drop": 0.13}}
FACT_WEIGHTS = {1: {"move": 1.0}, 2: {"move": 0.56, "get": 0.21, "drop": 0.23},
                3: {"move": 0.50, "get": 0.16, "drop": 0.34}, 6: {"move": 0.58, "get": 0.31, "drop": 0.11},
                7: {"move": 0.43, "get": 0.19, "drop": 0.09, "give": 0.29},
                8: {"move": 0.58, "get": 0.27, "drop": 0.15}}
# Every get but task 3's ends " there" (bAbI's files: all of them; task 3's, a fifth), a fifth of the drops.
GET_THERE = {3: 0.2}  # the other tasks: 1.0
DROP_THERE = 0.2
BEFORE_CURRENT = 0.8  # task 3: how often "before the L" asks about the place the object is in now (bAbI: 79%)
RECENT = 0.5  # how often a question is about someone or something named since the last one, if any is


class _Storyteller:
    """A story told one plausible fact at a time, read by a `Reader` as it goes (its state decides
    what may happen next, and every answer is its answer), with the facts (line ids) that settle
    what it knows, for the questions' `support`: a person's place, an object's place and each place
    it came to, what a person carries."""

    def __init__(self, task: int):
        self.task, self.reader, self.lines, self.asked = task, Reader(), [], 0  # asked: lines up to the last question
        self.at: dict[str, tuple[int, ...]] = {}  # person or object -> the facts that settle its place
        self.got: dict[str, int] = {}  # object -> the fact that gave it to its holder
        self.has: dict[str, tuple[int, ...]] = {}  # person -> the facts that settle what they carry
        self.arrivals: dict[str, list[tuple[int, ...]]] = {}  # object -> per place of Reader.history, how it came
        self.times: dict[tuple[str, str], int] = {}  # (question, answer) -> times asked

    def options(self) -> dict[str, list[tuple[str, str, str | None]]]:
        """Every plausible next fact of the task's kinds, as (who, place or object, taker): a move to
        another place; a get of an object nobody holds, in the person's place (one whose place is
        unknown only gets an object whose place is unknown); a drop of what one holds; a hand-over
        between two people in the same known place, as in bAbI."""
        r = self.reader
        placed = [p for p in PEOPLE if p in r.place]
        options = {
            "move": [(p, place, None) for p in PEOPLE for place in PLACES if r.place.get(p) != place],
            "get": [(p, o, None) for p in PEOPLE for o in OBJECTS
                    if r.holder(o) is None and r.where_object(o) in (None, r.place.get(p))],
            "drop": [(p, o, None) for p in PEOPLE for o in r.holds.get(p, [])],
            "give": [(p, o, q) for p in placed for o in r.holds.get(p, []) for q in placed
                     if q != p and r.place[q] == r.place[p]],
        }
        return {kind: told for kind, told in options.items() if told and kind in FACT_WEIGHTS[self.task]}

    def fact(self, rng: random.Random) -> None:
        """Tell one fact: a kind drawn by the task's weights among those possible now, then one of
        its plausible facts, in a verb form drawn evenly."""
        options = self.options()
        kinds = sorted(options)
        kind = rng.choices(kinds, [FACT_WEIGHTS[self.task][k] for k in kinds])[0]
        who, what, taker = rng.choice(options[kind])
        if kind == "move":
            text = f"{who} {rng.choice(MOVE_VERBS)} the {what}."
        elif kind == "give":
            text = f"{who} {rng.choice(GIVE_VERBS)} the {what} to {taker}."
        else:
            verbs, there = (GET_VERBS, GET_THERE.get(self.task, 1.0)) if kind == "get" else (DROP_VERBS, DROP_THERE)
            text = f"{who} {rng.choice(verbs)} the {what}{' there' if rng.random() < there else ''}."
        line = len(self.lines) + 1
        self.lines.append(Line(line, text))
        r = self.reader
        known = {o: len(r.history.get(o, ())) for o in OBJECTS}
        r.read(text)
        if kind == "move":
            self.at[who] = (line,)
            for o in r.holds.get(who, []):
                self.at[o] = (line, self.got[o])
            self.has.setdefault(who, (line,))
        else:
            holder = taker or who
            if kind != "drop":
                self.got[what] = line
            if holder in r.place:
                self.at[what] = (line,) + self.at[holder]
            for p in dict.fromkeys((who, holder)):  # what each carries now: the gets, and the fact that took one away
                lost = (line,) if p == who and kind != "get" else ()
                self.has[p] = lost + tuple(self.got[o] for o in r.holds.get(p, []))
        for o in OBJECTS:
            if len(r.history.get(o, ())) > known[o]:
                self.arrivals.setdefault(o, []).append(self.at[o])

    def pick(self, rng: random.Random, names: list[str]) -> str:
        """One of `names` (people or objects) to ask about: with chance `RECENT` one named since the
        last question, where any is (bAbI asks mostly about what just happened), else any of them."""
        recent = [n for n in names if any(n in line.text for line in self.lines[self.asked:])]
        return rng.choice(recent if recent and rng.random() < RECENT else names)

    def ask(self, rng: random.Random) -> None:
        """Ask one question of the task's form whose answer the facts settle, if there is one. As
        bAbI asks: yes and no evenly (task 6); only about someone who has carried something (7, 8);
        task 3, which has few questions to ask (an object must have come to two places), asks each
        question with its answer twice at most, where the object is now mostly (`BEFORE_CURRENT`)."""
        r = self.reader
        if self.task in (1, 6):
            people = [p for p in PEOPLE if p in r.place]
            if not people:
                return
            who = self.pick(rng, people)
            support = self.at[who]
            if self.task == 1:
                text = f"Where is {who}?"
            else:
                place = r.place[who] if rng.random() < 0.5 else rng.choice([p for p in PLACES if p != r.place[who]])
                text = f"Is {who} in the {place}?"
        elif self.task == 2:
            things = [o for o in OBJECTS if r.where_object(o)]
            if not things:
                return
            thing = self.pick(rng, things)
            text, support = f"Where is the {thing}?", self.at[thing]
        elif self.task == 3:
            came = {}  # object -> place it came to from a known one -> its last arrival there, if not asked twice
            for o in OBJECTS:
                places = r.history.get(o, [])
                last = {place: k for k, place in enumerate(places) if k > 0}
                came[o] = {p: k for p, k in last.items()
                           if self.times.get((f"Where was the {o} before the {p}?", places[k - 1]), 0) < 2}
            things = [o for o in OBJECTS if came[o]]
            if not things:
                return
            thing = self.pick(rng, things)
            now = r.history[thing][-1]
            earlier = sorted(set(came[thing]) - {now})
            current = now in came[thing] and (not earlier or rng.random() < BEFORE_CURRENT)
            place = now if current else rng.choice(earlier)
            k = came[thing][place]
            text = f"Where was the {thing} before the {place}?"
            support = self.arrivals[thing][k] + self.arrivals[thing][k - 1]
        else:
            people = [p for p in PEOPLE if r.first_got.get(p)]
            if not people:
                return
            who = self.pick(rng, people)
            text = f"How many objects is {who} carrying?" if self.task == 7 else f"What is {who} carrying?"
            support = self.has[who]
        answer = r.answer(text)
        assert answer != DONT_KNOW, text  # asked only where the facts settle it
        self.lines.append(Line(len(self.lines) + 1, text, answer, tuple(sorted(set(support), reverse=True))))
        self.asked, self.times[text, answer] = len(self.lines), self.times.get((text, answer), 0) + 1


def generate_story(rng: random.Random, task: int, facts: int = 10, ask_every: int = 2) -> Story:
    """A new story of bAbI `task` (1, 2, 3, 6, 7 or 8): `facts` plausible facts in every official
    form, with the official share of each kind and evenly drawn verbs (`FACT_WEIGHTS`), and after
    every `ask_every` facts (bAbI: 2) and after the last a question of the task's form that the
    facts settle, if there is one yet (else it waits for the next). Answers are the `Reader`'s; the
    support ids are the facts that settle them. The same `rng` state gives the same story. For
    stories the official files do not have: longer ones, and more of task 3 (bAbI has 1k)."""
    if task not in TASKS:
        raise ValueError(f"bAbI task {task} is not generated here; the tasks are {', '.join(map(str, TASKS))}.")
    if facts < 1 or ask_every < 1:
        raise ValueError(f"A generated story has 1 or more facts, a question after every 1 or more "
                         f"(got {facts}, {ask_every}).")
    teller = _Storyteller(task)
    for n in range(1, facts + 1):
        teller.fact(rng)
        if n % ask_every == 0 or n == facts:
            teller.ask(rng)
    return Story(task, tuple(teller.lines))


def features():
    """The columns' types, given rather than inferred, so that both splits (and a split where no
    question has lures) share one schema."""
    import datasets

    text = datasets.Value("string")
    return datasets.Features({
        "messages": [{"role": text, "content": text}],
        "questions": [{"turn": datasets.Value("int64"), "task": datasets.Value("int64"), "answer": text,
                       "distance": datasets.Value("int64"), "kind": text, "left_by": text, "others": [text]}],
    })


def _setting(default, help: str, **bounds):
    return field(default=default, metadata={"help": help, **bounds})


@dataclass(frozen=True)
class StoryMix:
    """What a training set is made of: one curriculum stage's data, written once. The command
    line's flags are made from these fields (their help is the flag's), a stage file's "data"
    object holds them, and the checks are here, so that every way in refuses the same values in
    the same sentence."""

    tasks: tuple = _setting(TASKS, "bAbI's tasks to read")
    notes: bool = _setting(False, "acknowledgements write down what each fact changed (\"OK. So the football is in "
                                  "the garden, before the kitchen. So Mary has the football.\"); default: \"OK.\" "
                                  "alone, as bAbI")
    dont_know: float = _setting(0.0, "chance after each fact (and before the first) of a question the facts leave "
                                     "open, answered \"I don't know.\"", low=0.0, high=1.0)
    typed: float = _setting(0.0, "chance that a user message is written as people type it (no final stop, lower "
                                 "case, a doubled or trailing space)", low=0.0, high=1.0)
    repeat_task3: int = _setting(1, "task 3's training stories N times (it has 1k stories, the others 10k)",
                                 low=1, high=100)
    probes: int = _setting(0, "add N task-1/6 distance probes of the generator (lstm_model.memory_tasks) to train, "
                              "N/9 to validation: a move asked about up to --probe-distance facts back",
                           low=0, high=1_000_000)
    probe_distance: int = _setting(40, "the probes' farthest distance, in facts", low=0, high=1000)
    generated: int = _setting(0, "add N stories per task told by generate_story (every official fact form, each "
                                 "answer the reader's) to train; validation stays bAbI's own", low=0, high=1_000_000)
    generated_facts: int = _setting(40, "the generated stories have 2 to M facts", low=2, high=1000)
    seed: int = _setting(0, "the random streams every conversation draws from")

    def __post_init__(self):
        tasks = tuple(dict.fromkeys(int(t) for t in self.tasks))
        if not tasks or set(tasks) - set(TASKS):
            raise ValueError(f"The tasks are some of {', '.join(map(str, TASKS))} (got {list(self.tasks)}).")
        object.__setattr__(self, "tasks", tasks)
        for f in dataclasses.fields(self):
            low, high, value = f.metadata.get("low"), f.metadata.get("high"), getattr(self, f.name)
            if low is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
                    or (isinstance(low, int) and not isinstance(value, int)):
                flag = "--" + f.name.replace("_", "-")
                kind = "a fraction" if isinstance(low, float) else "a whole number"
                raise ValueError(f"{flag} is {kind} from {low:,} to {high:,} (got {value!r}).")

    @classmethod
    def from_stage(cls, path: str, **changes) -> StoryMix:
        """The "data" object of a stage file, with `changes` over it; ValueError in one sentence
        if the file cannot be read as one."""
        try:
            with open(path, encoding="utf-8") as f:
                stage = json.loads(f.read(1_000_001))
            data = stage["data"]
            if not isinstance(data, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            raise ValueError(f"Could not read the stage file {path} ({reason}); give a JSON file with a \"data\" "
                             "object of story-mix settings.") from None
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"The stage file {path} has unknown data settings {sorted(unknown)}; "
                             f"see --help for the names.")
        return cls(**{**data, **changes})


def train_sha256(dd) -> str:
    """A digest of a DatasetDict's training conversations, row by row in order: two builds of one
    stage give the same digest exactly when they give the same training set."""
    digest = hashlib.sha256()
    for messages, questions in zip(dd["train"]["messages"], dd["train"]["questions"]):
        digest.update(json.dumps([messages, questions], sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def build(stories: dict[int, list[Story]], mix: StoryMix | None = None, **settings):
    """A DatasetDict (train, validation) of `conversation`s, made as `mix` says (or a StoryMix of
    `settings`): each task's stories split 90/10 (`split`), task 3's training stories
    `repeat_task3` times (1k of them beside 10k of the other tasks), the training conversations
    shuffled. Each conversation draws from its own random stream (seed, task, story, repeat), so
    the same mix gives the same data and one task's conversations do not change with the others
    chosen. `probes` adds that many of the generator's task-1/6 distance probes
    (`memory_tasks.distance_probe`, 0 to `probe_distance` facts back, the last mover asked too) to
    train, and a ninth as many to validation: bAbI's stories ask about moves a few facts back, the
    probes as far back as a conversation may reach. `generated` adds that many `generate_story`
    stories of each task, of 2 to `generated_facts` facts, to train (none to validation, which
    stays bAbI's own), each conversation from its own stream (seed, task, number). Only the tasks
    in `stories` are read; `mix.tasks` is for loading them."""
    import datasets

    mix = mix or StoryMix(**settings)
    seed, notes, dont_know, typed = mix.seed, mix.notes, mix.dont_know, mix.typed
    repeat_task3, probes, probe_distance = mix.repeat_task3, mix.probes, mix.probe_distance
    generated, generated_facts = mix.generated, mix.generated_facts
    splits = {"train": [], "validation": []}
    for task, told in stories.items():
        train, validation = split(told)
        for name, part, repeats in (("train", train, repeat_task3 if task == 3 else 1), ("validation", validation, 1)):
            offset = 0 if name == "train" else len(train)
            for repeat in range(repeats):
                for i, story in enumerate(part):
                    rng = random.Random(f"{seed}:{task}:{offset + i}:{repeat}")
                    splits[name].append(conversation(story, rng, notes, dont_know, typed))
    for task in stories:
        for i in range(generated):
            rng = random.Random(f"{seed}:gen:{task}:{i}")
            story = generate_story(rng, task, rng.randint(2, generated_facts))
            splits["train"].append(conversation(story, rng, notes, dont_know, typed))
    for name, count in (("train", probes), ("validation", probes // 9)):
        rng = random.Random(f"{seed}:probes:{name}")
        splits[name] += [distance_probe(rng, rng.randint(0, probe_distance), task=rng.choice(PROBE_TASKS),
                                        also_ask_last=True) for _ in range(count)]
    random.Random(f"{seed}:order").shuffle(splits["train"])
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows, features=features())
                                 for name, rows in splits.items()})


# -- the command line -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one sentence on stderr, no usage block
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _add_mix_flags(p: argparse.ArgumentParser) -> None:
    """One flag per StoryMix field, its help the field's; no defaults here (None: not given), so
    that a stage file's values stand where a flag is not given."""
    for f in dataclasses.fields(StoryMix):
        flag, shown = "--" + f.name.replace("_", "-"), f.default if f.name != "tasks" else " ".join(map(str, TASKS))
        help_text = f"{f.metadata['help']} (default {shown})"
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        elif f.name == "tasks":
            p.add_argument(flag, type=int, nargs="+", choices=list(TASKS), help=help_text)
        else:
            p.add_argument(flag, type=float if f.type in ("float", float) else int, help=help_text,
                           metavar="CHANCE" if f.type in ("float", float) else "N")


def main(argv=None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--babi", required=True, metavar="DIR_OR_HUB_ID",
                   help="a folder of bAbI's *_train.txt files, or a Hub dataset id (facebook/babi_qa)")
    p.add_argument("--revision", help="the Hub dataset's branch, tag or commit (a Hub id only)")
    p.add_argument("--out", required=True, help="a new (or empty) folder for the DatasetDict (save_to_disk)")
    p.add_argument("--stage", metavar="STAGE.json", help="a stage file: its \"data\" object is the mix; flags given "
                                                         "beside it change its fields")
    _add_mix_flags(p)
    args = p.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(StoryMix) if getattr(args, f.name) is not None}
    if os.path.isfile(args.out) or (os.path.isdir(args.out) and os.listdir(args.out)):
        p.error(f"{args.out} exists and is not an empty folder; give a new folder for the dataset.")
    try:
        mix = StoryMix.from_stage(args.stage, **given) if args.stage else StoryMix(**given)
        dd = build(load_stories(args.babi, mix.tasks, args.revision), mix)
    except ValueError as err:
        p.error(str(err))
    dd.save_to_disk(args.out)
    sizes = ", ".join(f"{name} {len(part):,}" for name, part in dd.items())
    print(f"Wrote {sum(len(part) for part in dd.values()):,} conversations ({sizes}) to {args.out}")
    print(f"  training set sha256 {train_sha256(dd)}")
    for name, part in dd.items():
        chars = {}
        for messages, asked in zip(part["messages"], part["questions"]):
            task = next((q["task"] for q in asked if q["task"]), 0)
            chars[task] = chars.get(task, 0) + len(render(messages, "\n\n", "\n\n")[0])
        per_task = ", ".join(f"task {t} {n:,}" for t, n in sorted(chars.items()))
        print(f"  {name}: {sum(chars.values()):,} characters as the chat feeds them ({per_task})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
