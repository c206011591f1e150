"""LSTM Memory Chat: a character-level LSTM you can train, publish, chat with and look inside."""

from .hub import load_model
from .model import CharLSTM
from .vocab import CharVocab

__all__ = ["CharLSTM", "CharVocab", "load_model"]
__version__ = "0.1.0"
