"""What the page says about the model being served: a line on how to talk to it, the message
box's placeholder and example messages. The bundled models have their own; any other model gets
one made from its chat protocol (turn separator and stop sequence)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Guide:
    intro: str  # Markdown, one or two sentences
    placeholder: str
    examples: tuple[str, ...]
    test: tuple[str, ...] = ()  # a memory test: messages sent in turn, the last a question (a button runs it)
    replies_only: bool = False  # trained to predict its replies only: its losses on messages mean nothing


GUIDES = {
    "shakespeare": Guide(
        intro="This model writes Shakespeare-like plays: start a speech with a name and a colon, e.g. `ROMEO:` and "
              "a line, and it answers as another character.",
        placeholder="ROMEO: What light through yonder window breaks?",
        examples=("ROMEO:\nWhat light through yonder window breaks?", "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?",
                  "HAMLET:\nTo be, or not to be, that is the question."),
    ),
    "timemachine": Guide(
        intro="This model continues H. G. Wells's *The Time Machine*: write a sentence of the story and it goes on.",
        placeholder="The Time Traveller smiled at us.",
        examples=("The Time Traveller smiled at us.", "I saw the Morlocks coming up out of the dark",
                  "Weena held my hand and"),
    ),
    "babi": Guide(
        intro="This model is learning to **remember what you tell it**. Tell it where someone goes "
              "(`Mary went to the kitchen.`), then ask `Where is Mary?`; then press **Reset** and ask again: a fresh "
              "memory can only guess. Under each reply: what a fresh memory would have written instead. It binds "
              "names to places: ask about anyone who moved, even 40 facts ago (right every time in its test "
              "probes) and counts what they carry. When someone gets or drops an object, or moves with one, it "
              "notes where the object now is (`OK. So the milk is in the office.`) and answers `Where is the "
              "milk?` from its notes (right 98 times in 100; less often when the note is many facts old: its "
              "model card has the figures). It "
              "knows Mary, John, Daniel and Sandra; the bathroom, hallway, garden, office, bedroom and kitchen; the "
              "football, the apple and the milk (`John got the milk.`, `Where is the milk?`).",
        placeholder="Mary went to the kitchen.",
        examples=("Mary went to the kitchen.", "John moved to the garden.", "Sandra journeyed to the office.",
                  "Where is Mary?", "Is John in the garden?", "John got the milk.", "Where is the milk?"),
        test=("Mary went to the kitchen.", "John moved to the garden.", "Sandra journeyed to the office.",
              "Where is Mary?"),  # two facts back: recency would say "office"
        replies_only=True,
    ),
}


def guide_for(name: str | None, model) -> Guide:
    """The guide of a bundled model by name, else one from the model's chat protocol."""
    if name in GUIDES:
        return GUIDES[name]
    separator = model.turn_separator.replace("\n", "\\n")
    return Guide(
        intro=f"This model reads your message followed by its turn separator (`{separator}`) and writes until its "
              "stop sequence: write the kind of text it was trained on.",
        placeholder="Write the start of a text like the model's training data",
        examples=(),
    )
