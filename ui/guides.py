"""What the page says about the model being served: a short intro, a longer guide on what it
does as seen in the page, the message box's placeholder, example messages and, for a memory
model, a memory test. The bundled models have their own; any other model gets one made from
its chat protocol (turn separator and stop sequence)."""

from __future__ import annotations

from dataclasses import dataclass

# The model the memory test button switches to when the served model has no memory test of its own.
TEST_MODEL = "babi"


@dataclass(frozen=True)
class Guide:
    intro: str  # Markdown, at most three short sentences: it sits above the chat, on a phone's first screen too
    placeholder: str
    examples: tuple[str, ...]
    details: str = ""  # Markdown: what the model does and the messages it understands (in a closed accordion)
    test: tuple[str, ...] = ()  # a memory test: messages sent in turn, the last a question (a button runs it)
    test_answer: str = ""  # the memory test's right answer, so that its verdict can say whether it was right
    replies_only: bool = False  # trained to predict its replies only: its losses on messages mean nothing
    judges: bool = False  # a model of bAbI's sentence forms: its answers are marked right or wrong in the chat


GUIDES = {
    "shakespeare": Guide(
        intro="This model writes Shakespeare-like plays. Start a speech with a name and a colon, e.g. `ROMEO:`, "
              "and a line: it answers with the next speech, under a speaker's name it picks itself.",
        placeholder="ROMEO: What light through yonder window breaks?",
        examples=("ROMEO:\nWhat light through yonder window breaks?", "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?",
                  "HAMLET:\nTo be, or not to be, that is the question."),
        details="Each reply is one speech: a speaker's name in capitals, a colon, then a few lines of verse or "
                "prose, ended by a blank line. The speaker is the model's choice: often another character, "
                "sometimes the one you wrote as (a reply to `ROMEO:` may start `ROMEO:` again), sometimes someone "
                "from another play. It learned the spelling, metre and shape of a play, not a plot, so the sense "
                "wanders. With the memory on, the conversation so far leans on each speech; under each reply, "
                "whether a fresh memory would have written something else.",
    ),
    "timemachine": Guide(
        intro="This model writes in the voice of H. G. Wells's *The Time Machine*. Send a sentence and it answers "
              "with a new paragraph of the Time Traveller's tale, opening with a quote mark.",
        placeholder="The Time Traveller smiled at us.",
        examples=("The Time Traveller smiled at us.", "I saw the Morlocks coming up out of the dark.",
                  "Weena held my hand."),
        details="It does not finish your sentence: each reply starts a new paragraph, as the book's paragraphs of "
                "the Time Traveller's story do, with a quote mark, and runs until a blank line or the length cap "
                "(Sampling, Max characters). It learned the book's words and rhythm (the Morlocks, the Eloi, "
                "Weena, the machine) more than its sense, so sentences run on and some words are made up. With "
                "the memory on, the conversation so far leans on each paragraph; under each reply, whether a "
                "fresh memory would have written something else.",
    ),
    "babi": Guide(
        intro="This model **remembers what you tell it**. Tell it who went where and who took what, one fact a "
              "message, then ask `Where is Mary?`. About someone it was never told of, or after **Reset**, it "
              "says `I don't know.`",
        placeholder="Mary went to the kitchen.",
        examples=("John went to the kitchen.", "John took the milk there.", "John travelled to the office.",
                  "Where is the milk?", "Where was the milk before the office?", "What is John carrying?",
                  "Where is Daniel?"),
        details="""One fact or one question a message, in these forms:

- **Someone moves**: `Mary went to the kitchen.` (also *moved*, *journeyed*, *travelled*, *went back* to).
- **Someone takes an object** where they are: `John got the milk there.` (also *took*, *picked up*, *grabbed*).
- **Someone leaves it**: `John dropped the milk.` (also *discarded*, *put down*, *left*).
- **Someone gives it**: `John handed the milk to Sandra.` (also *passed*, *gave* ... to).
- **Questions**: `Where is Mary?` `Where is the football?` `Where was the football before the kitchen?`
  `Is Mary in the kitchen?` `How many objects is Mary carrying?` `What is Mary carrying?`

Lower case and a missing final full stop are fine. It knows Mary, John, Daniel and Sandra; the bathroom,
hallway, garden, office, bedroom and kitchen; the football, the apple and the milk. When an object moves it
writes itself a note (`OK. So the milk is in the office.`) and answers from its notes; beside each answer,
how sure it was. Someone or something never mentioned gets `I don't know.`, and so does everything after
**Reset**, which empties the memory. The model card says how often it is right.""",
        test=("Mary went to the kitchen.", "John moved to the garden.", "Sandra journeyed to the office.",
              "Where is Mary?"),  # two facts back: recency would say "office"
        test_answer="kitchen",
        replies_only=True,
        judges=True,
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
