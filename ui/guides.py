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
    test_answer: str = ""  # the memory test's right answer, so that its verdict can say whether it was right
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
        intro="This model **remembers what you tell it**, in the forms of the bAbI tasks. Tell it one fact a "
              "message (`Mary went to the kitchen.`, `John took the milk there.`, `Sandra handed the apple to "
              "Daniel.`), then ask `Where is Mary?`, `Where is the milk?`, `Where was the milk before the office?`, "
              "`Is John in the garden?`, `How many objects is Sandra carrying?` or `What is Daniel carrying?`. "
              "Capitals, final stops and extra spaces make no difference. When a fact moves an object it writes a "
              "note (`OK. So the milk is in the office, before the garden. So John has the milk.`) and answers from "
              "its notes. About someone or something never mentioned it says `I don't know.`, and so does a fresh "
              "memory after **Reset**; beside each answer, how sure it was. It knows Mary, John, Daniel and "
              "Sandra; the bathroom, hallway, garden, office, bedroom and kitchen; the football, the apple and the "
              "milk. Its model card says how often it is right.",
        placeholder="Mary went to the kitchen.",
        examples=("John went to the kitchen.", "John took the milk there.", "John travelled to the office.",
                  "Where is the milk?", "Where was the milk before the office?", "What is John carrying?",
                  "Where is Daniel?"),
        test=("Mary went to the kitchen.", "John moved to the garden.", "Sandra journeyed to the office.",
              "Where is Mary?"),  # two facts back: recency would say "office"
        test_answer="kitchen",
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
