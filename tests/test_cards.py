"""Model cards name the project, and link it only where the publisher gives a URL."""

import os
import re

import pytest

from lstm_model.cards import model_card, refresh_metadata, write_model_card

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\[LSTM Memory Chat\]\(([^)]*)\)")


def test_a_card_names_the_project_without_an_address_nobody_gave(small_model):
    text = str(model_card(small_model))
    assert "made with LSTM Memory Chat." in text and not LINK.search(text)


@pytest.mark.parametrize("name", ["shakespeare", "timemachine", "babi"])
def test_bundled_cards_link_no_address(name):
    text = open(os.path.join(ROOT, "assets", name, "README.md"), encoding="utf-8").read()
    assert "LSTM Memory Chat" in text and not LINK.search(text) and "github.com/lstm-memory-chat" not in text


def test_a_given_project_url_links_the_name_when_written_and_when_refreshed(small_model, tmp_path):
    write_model_card(tmp_path, model=small_model, dataset="karpathy/tiny_shakespeare", split="validation",
                     train_config={}, metrics={"val_loss_full": 1.5}, sample="ANNA:",
                     project_url="https://example.org/lstm-memory-chat")
    text = open(tmp_path / "README.md", encoding="utf-8").read()
    assert LINK.findall(text) == ["https://example.org/lstm-memory-chat"]

    write_model_card(tmp_path, model=small_model, dataset="karpathy/tiny_shakespeare", split="validation",
                     train_config={}, metrics={"val_loss_full": 1.5}, sample="ANNA:")
    assert not LINK.search(open(tmp_path / "README.md", encoding="utf-8").read())
    refresh_metadata(tmp_path, project_url="https://example.org/other")
    text = open(tmp_path / "README.md", encoding="utf-8").read()
    assert LINK.findall(text) == ["https://example.org/other"] and text.count("LSTM Memory Chat") == 1
    refresh_metadata(tmp_path)  # no URL: the text is kept as it is
    assert LINK.findall(open(tmp_path / "README.md", encoding="utf-8").read()) == ["https://example.org/other"]


def test_publish_card_links_a_given_project_url_and_refuses_a_bad_one(trained_dir, tmp_path, capsys):
    import shutil

    from lstm_model.publish import main

    folder = shutil.copytree(trained_dir[0], tmp_path / "model")
    assert main(["card", str(folder), "--project-url", "https://example.org/p"]) == 0
    assert LINK.findall(open(folder / "README.md", encoding="utf-8").read()) == ["https://example.org/p"]
    with pytest.raises(SystemExit) as exit_:
        main(["card", str(folder), "--project-url", "javascript:alert(1)"])
    assert exit_.value.code == 2 and "is not a web address" in capsys.readouterr().err
