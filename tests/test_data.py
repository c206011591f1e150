import json

import pytest
import torch

from lstm_model.data import (
    DataError,
    StreamBatches,
    StreamingCorpus,
    batchify,
    get_batch,
    load_corpus,
    num_batches,
)

ROWS = ["First row of text.", "Second row, with a comma.", "Third: the end!"]
JOINED = "\n".join(ROWS)


def test_txt_file_is_read_exactly_and_split_by_fraction(tmp_path, play_text):
    path = tmp_path / "play.txt"
    path.write_text(play_text, encoding="utf-8")
    corpus = load_corpus(str(path), val_fraction=0.1)
    assert corpus.train + corpus.val == play_text  # newlines kept, nothing added
    assert len(corpus.val) == len(play_text) - int(len(play_text) * 0.9)
    assert corpus.val_from == "last 0.1"


def test_jsonl_csv_parquet_and_folders(tmp_path):
    import datasets

    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "rows.jsonl").write_text("".join(json.dumps({"text": r, "id": i}) + "\n" for i, r in enumerate(ROWS)))
    csv = tmp_path / "rows.csv"
    datasets.Dataset.from_dict({"body": ROWS}).to_csv(str(csv), index=False)
    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict({"text": ROWS, "n": [1, 2, 3]}).to_parquet(str(parquet))
    saved = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ROWS}),
        "validation": datasets.Dataset.from_dict({"text": ["Held out."]}),
    }).save_to_disk(str(saved))
    txt_dir = tmp_path / "txts"
    txt_dir.mkdir()
    for i, r in enumerate(ROWS):
        (txt_dir / f"{i}.txt").write_text(r)

    for source, column in [(tmp_path / "j", None), (csv, None), (parquet, None), (txt_dir, None), (csv, "body")]:
        corpus = load_corpus(str(source), text_column=column, val_fraction=0.2)
        assert corpus.train + corpus.val == JOINED, source
    corpus = load_corpus(str(saved))
    assert corpus.train == JOINED and corpus.val == "Held out." and corpus.val_from == "split:validation"


def test_clear_errors_for_bad_sources(tmp_path):
    parquet = tmp_path / "two.parquet"
    import datasets

    datasets.Dataset.from_dict({"a": ROWS, "b": ROWS}).to_parquet(str(parquet))
    with pytest.raises(DataError, match="--text-column"):
        load_corpus(str(parquet))
    with pytest.raises(DataError, match="no column 'c'"):
        load_corpus(str(parquet), text_column="c")
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "x.bin").write_bytes(b"\x00")
    with pytest.raises(DataError, match=".txt"):
        load_corpus(str(tmp_path / "x.bin"))


def test_unreachable_hub_dataset_fails_with_one_sentence():
    with pytest.raises(DataError) as info:
        load_corpus("karpathy/tiny_shakespeare")
    message = str(info.value)
    assert "karpathy/tiny_shakespeare" in message and "local path" in message and "\n" not in message


def test_batches_are_contiguous_streams():
    ids = torch.arange(103)
    streams = batchify(ids, 4)
    assert streams.shape == (4, 25)
    assert num_batches(streams, 10) == 3
    x0, y0 = get_batch(streams, 0, 10)
    x1, y1 = get_batch(streams, 1, 10)
    # Row b of batch 1 continues row b of batch 0, targets are the inputs shifted by one.
    assert torch.equal(x0[:, 1:], y0[:, :-1])
    assert torch.equal(x1[:, 0], y0[:, -1])
    assert torch.equal(x1[0], torch.arange(10, 20))


def test_streaming_matches_in_memory(tmp_path, play_text):
    path = tmp_path / "play.txt"
    path.write_text(play_text)
    stream = StreamingCorpus(str(path), val_fraction=0.1)
    corpus = load_corpus(str(path), val_fraction=0.1)
    assert stream.vocab() == corpus.vocab()
    assert "".join(stream.chars("val", 0, 10**9)) == corpus.val
    batches = StreamBatches(stream, "train", batch_size=4, seq_len=32)
    streams = batchify(torch.tensor(stream.vocab().encode(corpus.train)), 4)
    for index, x, y in batches.iterate():
        ex, ey = get_batch(streams, index, 32)
        assert torch.equal(x, ex) and torch.equal(y, ey)
    # Restarting at a later batch (resume) gives the same batches.
    first = list(batches.iterate(3))[0]
    assert first[0] == 3 and torch.equal(first[1], get_batch(streams, 3, 32)[0])


def test_streaming_batches_shard_across_ranks(tmp_path, play_text):
    """Each rank of a torchrun job reads only its own rows of the global batch."""
    path = tmp_path / "play.txt"
    path.write_text(play_text)
    stream = StreamingCorpus(str(path), val_fraction=0.1)
    corpus = load_corpus(str(path), val_fraction=0.1)
    streams = batchify(torch.tensor(stream.vocab().encode(corpus.train)), 8)
    for rank in range(2):
        shard = StreamBatches(stream, "train", batch_size=4, seq_len=32, rank=rank, world=2)
        index, x, y = next(iter(shard.iterate(2)))
        ex, ey = get_batch(streams, 2, 32)
        assert torch.equal(x, ex[rank * 4 : rank * 4 + 4]) and torch.equal(y, ey[rank * 4 : rank * 4 + 4])
