import pytest

from lstm_model import CharVocab
from lstm_model.vocab import VocabError


def test_round_trip():
    vocab = CharVocab.from_text("hello world\n")
    text = "world hello\n"
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.chars == sorted(set("hello world\n"))


def test_unknown_characters_are_skipped_and_reported():
    vocab = CharVocab.from_text("abc ")
    encoded = vocab.encode_report("a😀b é\x00c😀")
    assert encoded.text == "ab c"
    assert encoded.ids == vocab.encode("ab c")
    assert encoded.skipped == ["😀", "é", "\x00"]
    assert vocab.unknown("xyz a") == ["x", "y", "z"]


@pytest.mark.parametrize("chars", [[], ["a", "a"], ["ab"], [1]])
def test_bad_vocabularies_are_refused(chars):
    with pytest.raises(VocabError):
        CharVocab(chars)
