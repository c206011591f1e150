"""The loss measures built on the one loss loop (lstm_model/evaluate.py)."""

import math

import torch

from lstm_model.evaluate import text_loss, window_loss


def test_window_loss_is_nanogpt_s_estimate(small_model, play_text):
    ids = torch.tensor(small_model.vocab.encode(play_text))
    mean, error = window_loss(small_model, ids, windows=8, length=32, batch=4, seed=3)
    # The same windows by hand: each read from a fresh state, its 32 next-character predictions scored.
    starts = torch.randint(0, ids.numel() - 33 + 1, (8,), generator=torch.Generator().manual_seed(3)).tolist()
    by_hand = [text_loss(small_model, ids[i : i + 33], score_first=False).mean for i in starts]
    assert abs(mean - sum(by_hand) / 8) < 1e-5
    groups = [sum(by_hand[:4]) / 4, sum(by_hand[4:]) / 4]
    assert abs(error - abs(groups[0] - groups[1]) / 2) < 1e-5  # the sample sd of two means is |a-b|/sqrt(2)
    assert window_loss(small_model, ids, windows=8, length=32, batch=4, seed=3) == (mean, error)
    assert math.isfinite(mean) and mean > 0
