"""CharVocab: characters <-> ids, and the policy for characters the model never saw.

Policy for unknown characters (one rule, everywhere): a character that is not in the
vocabulary is *skipped* -- it is not fed to the model -- and it is *reported*: `encode_report`
returns the skipped characters, and every caller that takes user text (generation, the chat
session, the app) passes that list on to the person. Nothing raises KeyError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class VocabError(ValueError):
    """A vocabulary that cannot be used (empty, duplicated or multi-character entries)."""


@dataclass
class Encoded:
    """The ids of a text, the characters actually encoded, and the ones the vocabulary lacks."""

    ids: list[int]
    text: str
    skipped: list[str] = field(default_factory=list)  # unique, in order of first appearance


class CharVocab:
    """A fixed, ordered set of single characters. The id of a character is its position."""

    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise VocabError("The vocabulary is empty: train on a text with at least one character.")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise VocabError(f"Vocabulary entries must be single characters; found {bad[:5]!r}.")
        if len(set(chars)) != len(chars):
            dup = sorted({c for c in chars if chars.count(c) > 1})
            raise VocabError(f"The vocabulary lists {dup[:5]!r} more than once; each character must appear once.")
        self.chars: list[str] = chars
        self.index: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text) -> "CharVocab":
        """The sorted set of characters of a text (or an iterable of texts)."""
        if isinstance(text, str):
            return cls(sorted(set(text)))
        seen: set[str] = set()
        for piece in text:
            seen.update(piece)
        return cls(sorted(seen))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self.index

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocab) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"

    def encode_report(self, text: str) -> Encoded:
        """Encode `text`, skipping and reporting the characters the vocabulary lacks."""
        index = self.index
        ids: list[int] = []
        kept: list[str] = []
        skipped: dict[str, None] = {}
        for char in text:
            i = index.get(char)
            if i is None:
                skipped[char] = None
            else:
                ids.append(i)
                kept.append(char)
        return Encoded(ids=ids, text="".join(kept), skipped=list(skipped))

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of `text` that the vocabulary has (the others are skipped)."""
        return self.encode_report(text).ids

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` that the vocabulary lacks, unique, in order."""
        return self.encode_report(text).skipped

    def decode(self, ids) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)


# How a chat model reads a user's message (its config's `normalize`): "" reads it as typed; "lower"
# reads the words alone, so that the ways people type one sentence are one input: lower case, runs
# of spaces (and tabs, newlines) as one space, no space at either end, and no final ".", "?" or "!".
# The transcript keeps what was typed; training renders its user messages the same way.
NORMALIZATIONS = ("", "lower")


def normalize(text: str, form: str = "") -> str:
    """`text` as a model with this `normalize` form reads a user's message (NORMALIZATIONS)."""
    if not form:
        return text
    if form != "lower":
        raise VocabError(f"Unknown normalize form {form!r}; the forms are {', '.join(map(repr, NORMALIZATIONS))}.")
    return " ".join(text.lower().split()).rstrip(".?! ")


def unescape(text: str) -> str:
    """Text with the escapes a shell or a one-line box makes awkward to type: \\n newline, \\t tab,
    \\\\ backslash (a turn separator or a stop sequence given on a command line or in the page)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)
