"""`python -m lstm_model.generate`: the terminal sampler and chat (lstm_model.terminal).

The library itself lives in lstm_model.text_stream, so that the command line can import the chat
session without the session importing the command line back. Its names stay importable from here,
the module they were first published in (`from lstm_model.generate import generate, stream`).
"""

from .text_stream import PROMPT_STEP_CHARS, SLOW, WAIT, Stream, default_serving, generate, stream

__all__ = ["PROMPT_STEP_CHARS", "SLOW", "WAIT", "Stream", "default_serving", "generate", "stream"]

if __name__ == "__main__":
    import sys

    from .terminal import main

    sys.exit(main())
