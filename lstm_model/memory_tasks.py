"""Memory tasks as chat: dialogues in the forms of the bAbI tasks (Weston et al. 2015, "Towards
AI-Complete Question Answering"), where the user tells facts and later asks about them.

    python -m lstm_model.memory_tasks --out data/babi-chat [--stories 20000 --seed 0 --max-facts 40] [--people 4]
                                      [--probe-share 0.5 --probe-distance 10]

Tasks (bAbI's numbers): 1, single supporting fact ("Mary moved to the bathroom." ... "Where is
Mary?" -> "bathroom"); 2, two supporting facts (objects got, picked up, grabbed and dropped,
discarded, put down, left: "Where is the football?" -> the place of whoever holds it, or where it
was left); 6, yes/no ("Is Mary in the kitchen?"); 7, counting ("How many objects is Mary
carrying?" -> none, one, two, three). bAbI's vocabulary: Mary, John, Daniel, Sandra; bathroom,
hallway, garden, office, bedroom, kitchen; moved to, went to, journeyed to, travelled to, went
back to; the football, the apple, the milk.

A story is a conversation in the Hub's chat convention, a `messages` list of
{"role": "user"|"assistant", "content": ...}: the user tells one or several facts a message and
the model acknowledges ("OK."); the user asks and the model answers in a word. Each question's
task, answer, distance (facts told between its supporting fact and the question) and, for task 2,
kind (`World.object_kind`: the object held, carried along or left) are in the row's `questions`
column. `build(...)` returns a `datasets.DatasetDict` (train, validation, test),
the same for the same seed; `from_babi_qa(rows)` turns rows of the official `facebook/babi_qa`
(configs such as `en-10k-qa1`) into the same conversations; `render(messages, separator, stop)`
writes a conversation as the chat feeds it to the LSTM, with a mask of the assistant's characters
(for training on the replies only).
"""

from __future__ import annotations

import argparse
import random
import sys

from .vocab import normalize as normalize_text

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
PLACES = ("bathroom", "hallway", "garden", "office", "bedroom", "kitchen")
MOVES = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
OBJECTS = ("football", "apple", "milk")
GETS = ("got", "picked up", "grabbed")
DROPS = ("dropped", "discarded", "put down", "left")
COUNTS = ("none", "one", "two", "three")
ACK = "OK."
TASKS = (1, 2, 6, 7)
PROBE_TASKS = (1, 6)  # the tasks a distance probe can ask (where is someone; are they in a place)
SPLITS = {"train": 0, "validation": 1, "test": 2}


def acknowledge(notes: list[str] | None = None) -> str:
    """The reply to a message of facts: "OK.", then the notes if any (`World.notes`: where each
    object the facts placed now is). With notes the model writes down task 2's first step (whose
    place an object takes) when it happens, and a later "Where is the football?" is answered from
    its own last note, as task 1 is from the last move told."""
    return " ".join([ACK, *(notes or [])])


def question_row(turn: int, task: int | None, answer: str, distance: int, kind: str | None = None,
                 left_by: str | None = None, others: list[str] | None = None) -> dict:
    """A row of the `questions` column: the turn asked, the task, the right answer, facts back from
    the fact that answers it; for task 2 also the object's `kind` (held, carried, left) and the
    places a wrong answer is likely to name instead (a benchmark sorts its errors by them):
    `left_by`, where the one who dropped a left object is now, and `others`, where the other
    objects told of are. Every generator writes all keys, so mixed datasets share one schema."""
    return {"turn": turn, "task": task, "answer": answer, "distance": distance, "kind": kind,
            "left_by": left_by, "others": others}


class World:
    """Where everyone is and who holds what; facts change it, questions read it."""

    def __init__(self, people=PEOPLE):
        self.people = tuple(people)  # who may appear: fewer people, an easier story (a curriculum's first stages)
        self.place: dict[str, str] = {}  # person -> place
        self.place_told: dict[str, int] = {}  # person -> index of the fact that put them there
        self.holder: dict[str, str | None] = {}  # object -> person holding it (None: lying somewhere)
        self.lies: dict[str, str] = {}  # object not held -> where it was left
        self.object_told: dict[str, int] = {}  # object -> index of the fact that last moved it
        self.carry_told: dict[str, int] = {}  # person -> index of their last get or drop
        self.dropped_by: dict[str, str] = {}  # object lying somewhere -> who dropped it there
        self.placed_objects: list[str] = []  # the objects whose place the last fact settled (for `notes`)

    def notes(self) -> list[str]:
        """Where each object the last fact got, dropped or carried along now is ("So the football is
        in the kitchen."): what a note-taking acknowledgement says (`acknowledge`). Worded in the
        characters the facts already use (no capital T), so a model trained on "OK." learns it
        without a wider vocabulary."""
        return [f"So the {thing} is in the {self.where_object(thing)}." for thing in self.placed_objects]

    def fact(self, rng: random.Random, index: int) -> str:
        """A new fact (a move, or a get/drop once someone is somewhere), applied to the world."""
        placed = [p for p in self.people if p in self.place]
        if placed and rng.random() < 0.35:
            told = self.carry(rng, rng.choice(placed), index)
            if told is not None:
                return told
        return self.move(rng, rng.choice(self.people), index)

    def carry(self, rng: random.Random, person: str, index: int) -> str | None:
        """`person` (somewhere already) drops something they carry or gets something lying where
        they are (or never seen yet): the fact, applied to the world; None if neither is possible."""
        carried = [o for o in OBJECTS if self.holder.get(o) == person]
        free = [o for o in OBJECTS if self.holder.get(o) is None and self.lies.get(o, self.place[person]) == self.place[person]]
        if carried and (not free or rng.random() < 0.5):
            return self.drop(rng, person, rng.choice(carried), index)
        if free:
            return self.get(rng, person, rng.choice(free), index)
        return None

    def drop(self, rng: random.Random, person: str, thing: str, index: int) -> str:
        """`person` drops `thing` (which they carry) where they are: the fact, applied to the world."""
        self.holder[thing], self.lies[thing], self.object_told[thing] = None, self.place[person], index
        self.carry_told[person], self.placed_objects, self.dropped_by[thing] = index, [thing], person
        return f"{person} {rng.choice(DROPS)} the {thing}."

    def get(self, rng: random.Random, person: str, thing: str, index: int) -> str:
        """`person` gets `thing` (lying where they are, or never seen yet): the fact, applied."""
        self.holder[thing], self.object_told[thing], self.carry_told[person] = person, index, index
        self.lies.pop(thing, None)
        self.placed_objects = [thing]
        return f"{person} {rng.choice(GETS)} the {thing}."

    def move(self, rng: random.Random, person: str, index: int) -> str:
        """`person` goes somewhere new: the fact, applied to the world."""
        place = rng.choice([p for p in PLACES if p != self.place.get(person)])
        self.place[person], self.place_told[person] = place, index
        self.placed_objects = [o for o in OBJECTS if self.holder.get(o) == person]  # carried along
        return f"{person} {rng.choice(MOVES)} the {place}."

    def where_object(self, thing: str) -> str | None:
        holder = self.holder.get(thing)
        if holder is not None:
            return self.place.get(holder)
        return self.lies.get(thing)

    def object_kind(self, thing: str) -> str:
        """How task 2's answer about `thing` follows: "held" (the holder's place, and the holder has
        not moved since getting it), "carried" (the holder moved since: the object went along) or
        "left" (dropped: where the one who dropped it was then)."""
        holder = self.holder.get(thing)
        if holder is None:
            return "left"
        return "carried" if self.place_told[holder] > self.object_told[thing] else "held"

    def asked(self, turn: int, task: int, question: str, answer: str, distance: int) -> dict:
        """A question's row in the `questions` column (`question_row`); task 2's with its object's
        `kind` now and the places a wrong answer may name instead."""
        if task != 2:
            return question_row(turn, task, answer, distance)
        thing = question[len("Where is the "):-1]
        kind = self.object_kind(thing)
        left_by = self.place[self.dropped_by[thing]] if kind == "left" else None
        others = [self.where_object(o) for o in OBJECTS if o != thing and o in self.object_told]
        return question_row(turn, task, answer, distance, kind, left_by, others)

    def about_object(self, thing: str, index: int) -> tuple[str, str, int]:
        """Task 2 about `thing` (told of already): question, answer, distance (from the later of the
        fact that last moved it and its holder's last move)."""
        holder = self.holder.get(thing)
        last = max(self.object_told[thing], self.place_told[holder]) if holder else self.object_told[thing]
        return f"Where is the {thing}?", self.where_object(thing), index - 1 - last

    def about_count(self, person: str, index: int) -> tuple[str, str, int]:
        """Task 7 about `person` (somewhere already): question, answer, distance (from their last get
        or drop; none yet: from when they appeared)."""
        carried = [o for o in OBJECTS if self.holder.get(o) == person]
        last = self.carry_told.get(person, self.place_told[person])
        return f"How many objects is {person} carrying?", COUNTS[len(carried)], index - 1 - last

    def question(self, rng: random.Random, task: int, index: int) -> tuple[str, str, int] | None:
        """(question, answer, distance) for `task`, or None if the world cannot answer one yet."""
        placed = [p for p in self.people if p in self.place]
        if task in (1, 6) and placed:
            person = rng.choice(placed)
            distance = index - 1 - self.place_told[person]
            if task == 1:
                return f"Where is {person}?", self.place[person], distance
            place = self.place[person] if rng.random() < 0.5 else rng.choice([p for p in PLACES if p != self.place[person]])
            return f"Is {person} in the {place}?", "yes" if place == self.place[person] else "no", distance
        if task == 2:
            known = [o for o in OBJECTS if o in self.object_told and self.where_object(o)]
            if known:
                return self.about_object(rng.choice(known), index)
        if task == 7 and placed:
            return self.about_count(rng.choice(placed), index)
        return None


class Dialogue:
    """A conversation being written over a `World`: its messages and its questions' rows. `tell`
    adds a fact and its acknowledgement (with the world's notes where `notes`), `ask` a question
    and its answer."""

    def __init__(self, world: World, notes: bool = False):
        self.world, self.notes = world, notes
        self.messages: list[dict] = []
        self.questions: list[dict] = []

    @property
    def turn(self) -> int:
        """The index of the next user message."""
        return len(self.messages) // 2

    def tell(self, fact: str, notes: list[str] | None = None) -> None:
        """A message of facts (applied to the world already) and its acknowledgement; its notes are
        `notes` (a message of several facts gathers them fact by fact) or the last fact's."""
        said = (self.world.notes() if notes is None else notes) if self.notes else None
        self.messages += [{"role": "user", "content": fact}, {"role": "assistant", "content": acknowledge(said)}]

    def ask(self, task: int, question: str, answer: str, distance: int) -> None:
        self.questions.append(self.world.asked(self.turn, task, question, answer, distance))
        self.messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

    def row(self) -> dict:
        return {"messages": self.messages, "questions": self.questions}


def story(rng: random.Random, max_facts: int = 40, tasks=TASKS, max_per_message: int = 3, people: int = len(PEOPLE),
          question_rate: float = 0.5, notes: bool = False) -> dict:
    """One conversation: facts told in messages of 1 to `max_per_message` facts, a question after
    each message with chance `question_rate` and after the last (each about the world as the facts
    left it), about the first `people` of PEOPLE. With `notes` each acknowledgement also says where
    the objects its facts placed now are (`acknowledge`); the same draws either way."""
    dialogue, told = Dialogue(World(PEOPLE[:people]), notes), 0
    world = dialogue.world
    total = rng.randint(1, max_facts)
    while told < total:
        batch, said = [], []
        for i in range(min(rng.randint(1, max_per_message), total - told)):
            batch.append(world.fact(rng, told + i))
            said += world.notes()
        told += len(batch)
        dialogue.tell(" ".join(batch), said)
        if rng.random() < question_rate or told == total:
            task = rng.choice(tasks)
            asked = world.question(rng, task, told)
            if asked is not None:
                dialogue.ask(task, *asked)
    return dialogue.row()


def distance_probe(rng: random.Random, distance: int, lead: int = 3, people: int = len(PEOPLE), task: int = 1,
                   also_ask_last: bool = False) -> dict:
    """A task-1 conversation whose question's supporting fact is exactly `distance` facts back, one
    fact a message: up to `lead` facts, then a person moves (the supporting fact), then `distance`
    moves of the others, then "Where is <person>?" (among the first `people` of PEOPLE: at least
    two for a distance above 0). Past 0 facts back the last place said is the answer only by
    chance: recency cannot answer it, only a name bound to its place can.

    `task=6` asks the yes/no form instead, "Is <person> in the <place>?": half the time about their
    place (yes), otherwise about the last place said when that is elsewhere (the trap recency falls
    into), or another place.

    With `also_ask_last` (and a distance above 0) the last person to move is asked about too, in
    random order: one question's answer is the last place said and the other's is not, so only
    the name in the question tells them apart. Without it, the person asked about is always the one
    who did not move last, and a model can answer from the facts alone, never reading the name
    (the small models trained on single-question probes did exactly that)."""
    if task not in PROBE_TASKS:
        raise ValueError(f"probes are made for tasks {' and '.join(map(str, PROBE_TASKS))}, not task {task}")
    names = PEOPLE[:people]
    if distance and len(names) < 2:
        raise ValueError("a probe more than 0 facts back needs at least two people (the others move in between)")
    world, messages, person = World(names), [], rng.choice(names)
    others = [p for p in names if p != person]

    def tell(who: str) -> str:
        messages.extend([{"role": "user", "content": world.move(rng, who, len(messages) // 2)},
                         {"role": "assistant", "content": ACK}])
        return who

    for _ in range(rng.randint(0, lead)):
        tell(rng.choice(names))
    last_mover = tell(person)
    for _ in range(distance):
        last_mover = tell(rng.choice(others))
    asked = [(person, distance)]
    if also_ask_last and distance:
        asked.insert(rng.randrange(2), (last_mover, 0))
    questions = []
    for who, back in asked:
        place = world.place[who]
        if task == 1:
            question, answer = f"Where is {who}?", place
        else:  # the trap: the place of whoever the question is not about
            trap = world.place[last_mover if who != last_mover else person]
            named = place if rng.random() < 0.5 else (
                trap if trap != place else rng.choice([p for p in PLACES if p != place]))
            question, answer = f"Is {who} in the {named}?", "yes" if named == place else "no"
        questions.append(question_row(len(messages) // 2, task, answer, back))
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "questions": questions}


def roll_call(rng: random.Random, people: int = len(PEOPLE), task: int = 1) -> dict:
    """A binding drill for `people` people (the first of PEOPLE): each moves once, in random order,
    then every one of them is asked about, in random order (task 1 "Where is <person>?" or task 6
    "Is <person> in the <place>?"). Holding two bindings is what the two-person drill teaches;
    this one asks the state to hold all of them at once, each question at its own distance."""
    if task not in PROBE_TASKS:
        raise ValueError(f"drills are made for tasks {' and '.join(map(str, PROBE_TASKS))}, not task {task}")
    names = list(PEOPLE[:people])
    if len(names) < 2:
        raise ValueError("a binding drill needs at least two people (one move each)")
    world, messages = World(names), []
    rng.shuffle(names)
    for who in names:
        messages += [{"role": "user", "content": world.move(rng, who, len(messages) // 2)},
                     {"role": "assistant", "content": ACK}]
    moved = list(names)
    rng.shuffle(names)
    questions = []
    for who in names:
        place = world.place[who]
        if task == 1:
            question, answer = f"Where is {who}?", place
        else:
            named = place if rng.random() < 0.5 else rng.choice([p for p in PLACES if p != place])
            question, answer = f"Is {who} in the {named}?", "yes" if named == place else "no"
        questions.append(question_row(len(messages) // 2, task, answer, len(moved) - 1 - moved.index(who)))
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "questions": questions}


CARRY_TASKS = (2, 7)  # the tasks a carrying drill asks (where is an object; how many is someone carrying)


def carry_drill(rng: random.Random, people: int = len(PEOPLE), tasks=CARRY_TASKS, max_people: int | None = None,
                max_facts: int = 6, move_chance: float = 0.25, wait: int = 0, ask_chance: float = 0.0,
                notes: bool = False, wait_idle: bool = False) -> dict:
    """A drill for the objects (tasks 2 and 7): the first `people` of PEOPLE move once each, in
    random order; then one or two of them get and drop things (2 to `max_facts` facts, each a move
    with chance `move_chance`, else a get or drop, the objects carried along); then every object
    told of ("Where is the football?") and every one who got or dropped something ("How many
    objects is Mary carrying?") is asked about, in random order (of `tasks`, 2 and/or 7). In
    stories these questions are few and a count is mostly "none"; here each conversation asks
    several, about the people who did carry.

    `max_people` draws the number of people of each drill from 1 to that many (of the first
    `people`) instead: the object drills' curriculum starts from one person (who gets, moves,
    drops and moves on: where an object was left is no longer the last place said) and widens.
    `wait` adds 0 to that many moves by anyone (objects carried along) after the carrying and
    before the questions: what each object's place was settled by lies that much further back, as
    in the stories, where task 2 is asked up to 40 facts later. With 0 (the default) no draw.
    `ask_chance` asks, after each of those facts, with that chance, where one object told of so far
    is (task 2, if asked): every update of an object's place is then trained as it happens, not
    only the end state. With 0 (the default) no draw. `notes`: acknowledgements that say where the
    objects each fact placed now are (`acknowledge`). `wait_idle`: the waiting moves are made by
    people who carry nothing, where anyone does (so no object moves while the drill waits, and each
    object's place, and its note, lies as far back as the wait)."""
    tasks = [t for t in tasks if t in CARRY_TASKS]
    if not tasks:
        raise ValueError(f"carrying drills ask tasks {' or '.join(map(str, CARRY_TASKS))}")
    if max_people is not None:
        people = rng.randint(1, min(max_people, people))
    names = list(PEOPLE[:people])
    dialogue = Dialogue(World(names), notes)
    world = dialogue.world

    def tell(fact: str) -> None:  # then, with chance ask_chance, where one object told of so far is
        dialogue.tell(fact)
        if ask_chance and 2 in tasks and rng.random() < ask_chance:  # no draw at a chance of 0
            told = [o for o in OBJECTS if o in world.object_told]
            if told:
                dialogue.ask(2, *world.about_object(rng.choice(told), dialogue.turn))

    rng.shuffle(names)
    for who in names:
        dialogue.tell(world.move(rng, who, dialogue.turn))
    carriers = rng.sample(names, min(len(names), rng.randint(1, 2)))
    for _ in range(rng.randint(2, max_facts)):
        who = rng.choice(carriers)
        fact = world.carry(rng, who, dialogue.turn) if rng.random() < 1 - move_chance else None
        tell(fact or world.move(rng, who, dialogue.turn))
    for _ in range(rng.randint(0, wait) if wait else 0):
        idle = [p for p in names if p not in world.holder.values()] if wait_idle else []
        tell(world.move(rng, rng.choice(idle or names), dialogue.turn))
    told = dialogue.turn
    asked = [world.about_object(o, told) for o in OBJECTS if o in world.object_told] if 2 in tasks else []
    asked += [world.about_count(p, told) for p in carriers] if 7 in tasks else []
    rng.shuffle(asked)
    for question, answer, distance in asked:
        dialogue.ask(2 if question.startswith("Where") else 7, question, answer, distance)
    return dialogue.row()


def object_roll_call(rng: random.Random, people: int = len(PEOPLE), wait: int = 0, notes: bool = False) -> dict:
    """A binding drill for the objects, as `roll_call` is for people: the first `people` of PEOPLE
    move once each; then each object in turn, in random order, is got by someone, who may move
    with it (chance 1/2) and may drop it (chance 2/3), so the objects mostly end up in different
    places; then 0 to `wait` moves by people who carry nothing (where anyone does), and every
    object is asked about ("Where is the football?"), in random order. Only the object's name in
    the question tells the answers apart, as only the person's name does in a roll call."""
    names = list(PEOPLE[:people])
    dialogue = Dialogue(World(names), notes)
    world = dialogue.world
    rng.shuffle(names)
    for who in names:
        dialogue.tell(world.move(rng, who, dialogue.turn))
    things = list(OBJECTS)
    rng.shuffle(things)
    for thing in things:
        who = rng.choice(names)
        dialogue.tell(world.get(rng, who, thing, dialogue.turn))
        if rng.random() < 0.5:
            dialogue.tell(world.move(rng, who, dialogue.turn))
        if rng.random() < 2 / 3:
            dialogue.tell(world.drop(rng, who, thing, dialogue.turn))
    for _ in range(rng.randint(0, wait) if wait else 0):
        idle = [p for p in names if p not in world.holder.values()]
        dialogue.tell(world.move(rng, rng.choice(idle or names), dialogue.turn))
    rng.shuffle(things)
    told = dialogue.turn
    for thing in things:
        dialogue.ask(2, *world.about_object(thing, told))
    return dialogue.row()


def tasks_for_share(share: float, name: str, kind: str, kinds, tasks) -> list[int]:
    """The tasks of `tasks` that a share of conversations of `kind` (asking `kinds`) can ask;
    ValueError with a sentence if the share is no fraction, or is set and none of them is chosen."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the {name} share is a fraction of the conversations, from 0 to 1 (got {share})")
    chosen = [t for t in tasks if t in kinds]
    if share and not chosen:
        raise ValueError(f"{kind} ask tasks {' or '.join(map(str, kinds))}: add one of them to the tasks, "
                         f"or leave the {name} share at 0")
    return chosen


def build(stories: int = 20000, seed: int = 0, max_facts: int = 40, tasks=TASKS, validation: int = 1000,
          test: int = 1000, max_per_message: int = 3, people: int = len(PEOPLE), probe_share: float = 0.0,
          probe_distance: int = 10, question_rate: float = 0.5, probe_lead: int = 3, probe_min_distance: int = 0,
          drill_share: float = 0.0, drill_people: int = 2, carry_share: float = 0.0, carry_people: int | None = None,
          carry_facts: int = 6, carry_moves: float = 0.25, carry_wait: int = 0, carry_ask: float = 0.0,
          notes: bool = False, carry_wait_idle: bool = False, object_share: float = 0.0):
    """A DatasetDict of conversations: `stories` for training, `validation` and `test` held out,
    each split from its own random stream (the same for the same seed). `people` < 4 keeps to the
    first few names: the early stages of a curriculum (1 -> 2 -> 4 people).

    `probe_share` of the conversations (in every split) are distance probes instead of stories:
    a person moves, then `probe_min_distance` (default 0) to `probe_distance` moves of the others,
    then a task-1 or task-6 question about that person (of `tasks`), where the last place said is
    the answer only by chance, and one about the last to move, in random order (`distance_probe`'s
    `also_ask_last`), after 0 to `probe_lead` facts about anyone. Without them a small LSTM settles
    on answering with the last place said (recency), a shortcut right often enough in ordinary
    stories; with them only the name in the question tells the answers apart. With 0 (the
    default) the stories are exactly those of earlier versions for the same seed. `question_rate`
    1 asks after every message: more answers (and more where recency fails) for the same
    characters read.

    `drill_share` of the probes are binding drills instead (two moves, no fact before them, both
    people asked): a curriculum stage that widens the probes keeps the drill in its mix, which
    kept more of the binding the drill had taught than the wider probes alone
    (measured when the generated-stories curriculum was made). With 0 (the default) no draw is spent on it.
    `drill_people` above 2 makes each drill a roll call instead (`roll_call`: that many people
    move once each, all of them asked): the step from binding two people to holding four.

    `carry_share` of the conversations are carrying drills (`carry_drill`: tasks 2 and 7 of
    `tasks`, several questions each about the people who got and dropped things). With 0 (the
    default) no draw is spent on it. `carry_people` draws each drill's people from 1 to that many
    (default: all of `people`, no draw), `carry_facts` is the most gets, drops and moves after
    everyone is placed (default 6) and `carry_moves` the chance that one of them is a move
    (default 0.25): an object drill curriculum starts at one person, few facts, many moves.
    `carry_wait` adds 0 to that many moves by anyone before a drill's questions (default 0: none;
    with `carry_wait_idle`, by those who carry nothing where anyone does),
    `carry_ask` the chance of asking where an object is after each of a drill's facts (default 0).

    `object_share` of the conversations are object roll calls (`object_roll_call`: every object
    placed, mostly apart, then 0 to `carry_wait` idle moves, then all three asked), if task 2 is
    among `tasks`. With 0 (the default) no draw is spent on it.

    `notes` makes every acknowledgement of facts that get, drop or carry objects along say where
    those objects now are ("OK. So the football is in the kitchen."; `acknowledge`): the same
    conversations otherwise, drawn alike."""
    import datasets

    if min(stories, validation, test) < 0:
        raise ValueError(f"a split holds 0 or more conversations (got {stories}, {validation}, {test})")
    if max_facts < 1 or max_per_message < 1 or probe_lead < 0:  # else randint's "empty range" later
        raise ValueError(f"max_facts and max_per_message must be at least 1 and probe_lead at least 0 (got "
                         f"{max_facts}, {max_per_message} and {probe_lead})")
    if not 0.0 <= question_rate <= 1.0:
        raise ValueError(f"the question rate is a chance per message, from 0 to 1 (got {question_rate})")
    probe_tasks = tasks_for_share(probe_share, "probe", "probes", PROBE_TASKS, tasks)
    if not 0.0 <= drill_share <= 1.0:
        raise ValueError(f"the drill share is a fraction of the probes, from 0 to 1 (got {drill_share})")
    if drill_share and people < 2:
        raise ValueError("a binding drill needs at least two people (one move each)")
    if drill_share and not 2 <= drill_people <= people:
        raise ValueError(f"a drill's people (--drill-people {drill_people}) must number from 2 to the "
                         f"conversations' people ({people})")
    carry_tasks = tasks_for_share(carry_share, "carry", "carrying drills", CARRY_TASKS, tasks)
    tasks_for_share(object_share, "object", "object roll calls", (2,), tasks)
    if carry_people is not None and not 1 <= carry_people <= people:
        raise ValueError(f"a carrying drill's people (--carry-people {carry_people}) must number from 1 to the "
                         f"conversations' people ({people})")
    if carry_facts < 2:
        raise ValueError(f"a carrying drill tells 2 or more gets, drops and moves (--carry-facts {carry_facts})")
    if not 0.0 <= carry_ask <= 1.0:
        raise ValueError(f"the carrying drills' asking chance is a fraction from 0 to 1 (got {carry_ask})")
    if carry_wait < 0:
        raise ValueError(f"a carrying drill waits 0 or more moves before its questions (--carry-wait {carry_wait})")
    if not 0.0 <= carry_moves < 1.0:
        raise ValueError(f"the carrying drills' move chance is a fraction from 0 up to (not including) 1 "
                         f"(got {carry_moves}): at 1 nobody would get or drop anything")
    if not 0 <= probe_min_distance <= probe_distance:
        raise ValueError(f"the probes' nearest distance ({probe_min_distance}) must lie between 0 and the farthest "
                         f"({probe_distance}): lower --probe-min-distance or raise --probe-distance")
    if probe_share and probe_distance and people < 2:
        raise ValueError("probes more than 0 facts back need at least two people (the others move in between)")
    sizes = {"train": stories, "validation": validation, "test": test}
    splits = {}
    for name, size in sizes.items():
        rng = random.Random(f"{seed}:{name}")
        rows = []
        for _ in range(size):
            if object_share and rng.random() < object_share:  # no draw at all with a share of 0
                rows.append(object_roll_call(rng, people, carry_wait, notes))
            elif carry_share and rng.random() < carry_share:  # no draw at all with a share of 0
                rows.append(carry_drill(rng, people, carry_tasks, carry_people, carry_facts, carry_moves, carry_wait,
                                        carry_ask, notes, carry_wait_idle))
            elif probe_share and rng.random() < probe_share:
                drill = drill_share and rng.random() < drill_share  # no draw at all with a share of 0
                if drill and drill_people > 2:
                    rows.append(roll_call(rng, drill_people, task=rng.choice(probe_tasks)))
                    continue
                distance, lead = (1, 0) if drill else (rng.randint(probe_min_distance, probe_distance), probe_lead)
                rows.append(distance_probe(rng, distance, lead, people=people, task=rng.choice(probe_tasks),
                                           also_ask_last=True))
            else:
                rows.append(story(rng, max_facts, tasks, max_per_message, people, question_rate, notes))
        splits[name] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)


def from_babi_qa(rows) -> list[dict]:
    """Conversations from rows of `facebook/babi_qa` (each a `story` with `text`, `type` (0:
    context, 1: question), `answer` and `supporting_ids`): one fact a message, acknowledged; a
    question answered with its answer; distance counted from the last supporting fact."""
    out = []
    for row in rows:
        s = row["story"]
        messages, questions, fact_index, ids_to_fact = [], [], 0, {}
        for sid, kind, text, answer, support in zip(s["id"], s["type"], s["text"], s["answer"], s["supporting_ids"]):
            if kind == 0:
                ids_to_fact[str(sid)] = fact_index
                fact_index += 1
                messages += [{"role": "user", "content": text}, {"role": "assistant", "content": ACK}]
            else:
                last = max((ids_to_fact[str(i)] for i in support if str(i) in ids_to_fact), default=fact_index - 1)
                questions.append(question_row(len(messages) // 2, None, answer, fact_index - 1 - last))
                messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        out.append({"messages": messages, "questions": questions})
    return out


def render(messages: list[dict], separator: str, stop: str, normalize: str = "") -> tuple[str, list[bool]]:
    """A conversation as the chat feeds it to the LSTM: each user message (read as the model's
    `normalize` form says: vocab.normalize) + `separator`, each reply + `stop`; and, per
    character, whether it is the assistant's (its reply and stop)."""
    text, mask = [], []
    for m in messages:
        piece = (normalize_text(m["content"], normalize) + separator if m["role"] == "user"
                 else m["content"] + stop)
        text.append(piece)
        mask += [m["role"] == "assistant"] * len(piece)
    return "".join(text), mask


# -- the command line (main): its arguments' checks, the schema saved, the write ------------------

# Building holds every conversation in memory until it is saved: measured at the peak, 2.4 KB for a
# story of one fact, 18.5 KB for one of up to 40, about 0.5 KB for each fact or question counted
# below. So the size asked for is bounded before anything is drawn: conversations, each counted at
# its longest plus 3 (its questions and its row), at most MAX_BUILT in all, about 5 GB at the peak.
# 200,000 stories of up to 40 facts (the largest the benchmarks build) fit.
MAX_BUILT = 10_000_000
MAX_LENGTH = 10_000  # the most facts a length flag (--max-facts, --probe-distance, --carry-wait, ...) asks for


def _whole(least: int, most: int | None = None):
    """An argparse type: a whole number from `least` (to `most`), else one sentence."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least or (most is not None and value > most):
            bounds = f"at least {least:,}" if most is None else f"from {least:,} to {most:,}"
            raise argparse.ArgumentTypeError(f"must be {bounds} (got {value:,})")
        return value
    return parse


def chat_features():
    """The schema every split is saved with. Arrow infers a column's type from its values, so a split
    where no question had a left object (a few stories) would type `left_by` as null, another as
    string, and the Hub refuses splits whose features differ."""
    from datasets import Features, List, Value

    text, number = Value("string"), Value("int64")
    return Features({
        "messages": List({"role": text, "content": text}),
        "questions": List({"turn": number, "task": number, "answer": text, "distance": number, "kind": text,
                           "left_by": text, "others": List(text)}),
    })


def _out_problem(out: str) -> str | None:
    """Why the dataset cannot go to `out` (a sentence), or None. It takes a new or empty folder, or
    a dataset this command wrote (replaced once the new one is whole); never other files."""
    import json
    import os

    if not out.strip():
        return "--out needs a folder path"
    if os.path.isdir(out):
        names = set(os.listdir(out))
        try:
            with open(os.path.join(out, "dataset_dict.json"), encoding="utf-8") as f:
                ours = json.load(f) == {"splits": list(SPLITS)} and names <= {"dataset_dict.json", *SPLITS}
        except (OSError, ValueError):
            ours = False
        if names and not ours:
            return f"--out {out} holds other files; give a new or empty folder (a dataset this command wrote is replaced)"
        return None
    if os.path.exists(out):
        return f"--out {out} is a file; give a folder for the dataset"
    above = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        return f"--out {out} lies under the file {above}; give a folder path"
    return None


def _replace(staging: str, out: str) -> None:
    """Move the finished dataset in `staging` to `out`, the dataset there before (if any) only then removed."""
    import os
    import shutil

    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # a folder's usual permissions, not mkdtemp's 0700
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if os.path.isdir(out) and os.listdir(out):
        old = staging + ".old"
        os.rename(out, old)
        try:
            os.rename(staging, out)
        except OSError:
            os.rename(old, out)  # the earlier dataset back where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)  # an empty folder is replaced as well


def main(argv=None) -> int:
    """`python -m lstm_model.memory_tasks`: a bad argument ends in one sentence and status 2 before
    anything is built or written, a failure to write or push in one sentence and status 1."""
    import os
    import shutil
    import tempfile

    p = argparse.ArgumentParser(prog="python -m lstm_model.memory_tasks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # Counts and lengths are checked as they are parsed (_whole); the shares, the chances and how
    # the flags fit together by build(), before it draws anything.
    length = _whole(0, MAX_LENGTH)  # facts in a conversation
    p.add_argument("--out", required=True, help="folder for the DatasetDict (save_to_disk): a new or empty one, or "
                                                "a dataset this command wrote, replaced once the new one is complete")
    p.add_argument("--stories", type=_whole(1), default=20000)
    p.add_argument("--validation", type=_whole(1), default=1000)
    p.add_argument("--test", type=_whole(1), default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-facts", type=_whole(1, MAX_LENGTH), default=40)
    p.add_argument("--max-per-message", type=_whole(1, MAX_LENGTH), default=3, help="facts per user message, at most")
    p.add_argument("--tasks", type=int, nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--people", type=int, default=len(PEOPLE), choices=range(1, len(PEOPLE) + 1),
                   help="how many of Mary, John, Daniel, Sandra appear (1 or 2: a curriculum's first stages)")
    p.add_argument("--question-rate", type=float, default=0.5, metavar="CHANCE",
                   help="chance of a question after each message of facts (default 0.5; 1: after every one)")
    p.add_argument("--probe-share", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of conversations are distance probes (a person moves, then only the others "
                        "do, then a question about that person): the last place said is then no answer; default 0")
    p.add_argument("--probe-distance", type=length, default=10, metavar="N",
                   help="probes ask about a move 0 to N facts back (default 10)")
    p.add_argument("--probe-min-distance", type=length, default=0, metavar="N",
                   help="probes ask about a move at least N facts back (default 0; 1 with --probe-distance 1 and "
                        "--probe-lead 0: the binding drill, two moves and both people asked)")
    p.add_argument("--drill-share", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of the probes are binding drills (two moves, nothing before them, both "
                        "people asked): keeps the drill in a wider stage's mix (default 0)")
    p.add_argument("--drill-people", type=_whole(2, len(PEOPLE)), default=2, metavar="N",
                   help="people in each drill of --drill-share (default 2; 3 or 4: a roll call, each moves once "
                        "and all are asked)")
    p.add_argument("--carry-share", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of conversations are carrying drills (people get and drop things, then "
                        "every object and carrier is asked about: tasks 2 and 7 of --tasks); default 0")
    p.add_argument("--carry-people", type=int, metavar="N",
                   help="each carrying drill has 1 to N people, drawn (default: all of --people, every time)")
    p.add_argument("--carry-facts", type=_whole(2, MAX_LENGTH), default=6, metavar="N",
                   help="each carrying drill tells 2 to N gets, drops and moves after everyone is placed (default 6)")
    p.add_argument("--carry-moves", type=float, default=0.25, metavar="CHANCE",
                   help="chance that a carrying drill's fact is a move rather than a get or drop (default 0.25): "
                        "more moves, more objects carried along and left behind")
    p.add_argument("--carry-wait", type=length, default=0, metavar="N",
                   help="each carrying drill adds 0 to N moves by anyone before its questions (default 0): the "
                        "objects' places are then settled further back, as in the stories")
    p.add_argument("--carry-wait-idle", action="store_true",
                   help="the moves of --carry-wait are made by people who carry nothing, where anyone does: no "
                        "object moves while a drill waits, so where each lies was settled (and noted) that far back")
    p.add_argument("--object-share", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of conversations are object roll calls (every object got by someone, mostly "
                        "left apart, 0 to --carry-wait idle moves, then all three asked; task 2); default 0")
    p.add_argument("--carry-ask", type=float, default=0.0, metavar="CHANCE",
                   help="chance of asking where an object is after each fact of a carrying drill (default 0): every "
                        "update of an object's place is trained as it happens, not only the end state")
    p.add_argument("--probe-lead", type=length, default=3, metavar="N",
                   help="probes begin with 0 to N facts about anyone (default 3; 0: the shortest binding drill)")
    p.add_argument("--notes", action="store_true",
                   help="acknowledgements that get, drop or carry objects along say where those objects now are "
                        "(\"OK. So the football is in the kitchen.\"): the model writes task 2's first step down as it "
                        "happens; default: \"OK.\" alone, as bAbI")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="also push the dataset to this Hub dataset repo")
    args = p.parse_args(argv)
    # The longest a conversation can be, in facts: a story, a probe, a carrying drill or an object
    # roll call (everyone placed, three objects got, carried and dropped), then its wait.
    longest = max(args.max_facts, args.probe_lead + 1 + args.probe_distance,
                  len(PEOPLE) + max(args.carry_facts, 3 * len(OBJECTS)) + args.carry_wait)
    conversations = args.stories + args.validation + args.test
    if conversations * (longest + 3) > MAX_BUILT:
        p.error(f"{conversations:,} conversations of up to {longest:,} facts are too many to build in memory; ask "
                f"for at most {MAX_BUILT // (longest + 3):,} in all (--stories, --validation and --test together), "
                "or for shorter conversations")
    if args.push_to_hub:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(args.push_to_hub)
        except HFValidationError:
            p.error(f"--push-to-hub {args.push_to_hub!r} is not a Hub repo id; give user/name (letters, digits, "
                    "'-', '_', '.')")
    try:
        problem = _out_problem(args.out)
    except OSError as err:
        problem = f"--out {args.out} cannot be read ({err.strerror or err}); give a folder you can write to"
    if problem:
        p.error(problem)
    # Written beside --out first, then moved there whole: a failure or Ctrl-C never leaves half a
    # dataset; made before building, so an unwritable --out is found before the wait.
    above = os.path.dirname(os.path.abspath(args.out))
    while not os.path.isdir(above):
        above = os.path.dirname(above)
    try:
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(args.out))}.", suffix=".tmp", dir=above)
    except OSError as err:
        print(f"error: cannot write to --out {args.out} ({err.strerror or err}); give a folder you can write to.",
              file=sys.stderr)
        return 1
    try:
        try:
            dd = build(args.stories, args.seed, args.max_facts, tuple(args.tasks), args.validation, args.test,
                       args.max_per_message, args.people, args.probe_share, args.probe_distance, args.question_rate,
                       args.probe_lead, args.probe_min_distance, args.drill_share, args.drill_people,
                       args.carry_share, args.carry_people, args.carry_facts, args.carry_moves, args.carry_wait,
                       args.carry_ask, args.notes, args.carry_wait_idle, args.object_share)
        except ValueError as err:
            p.error(str(err))
        features = chat_features()
        dd = type(dd)({name: split.cast(features) for name, split in dd.items()})
        try:
            dd.save_to_disk(staging)
            _replace(staging, args.out)
        except OSError as err:
            print(f"error: could not write the dataset to --out {args.out} ({err.strerror or err}); nothing was "
                  "written there: free disk space or give another folder.", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sizes = ", ".join(f"{name} {len(split):,}" for name, split in dd.items())
    print(f"Wrote {sum(len(s) for s in dd.values()):,} conversations ({sizes}) to {args.out}")
    if args.push_to_hub:
        try:
            dd.push_to_hub(args.push_to_hub)
        except Exception as err:  # the local copy is kept
            print(f"error: could not push to the Hub repo '{args.push_to_hub}' ({type(err).__name__}: "
                  f"{str(err).splitlines()[0] if str(err) else ''}); the dataset is saved in {args.out}.", file=sys.stderr)
            return 1
        print(f"Pushed to {args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
