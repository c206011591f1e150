"""A visitor's request checked where it enters: the sampling settings and their ranges, text,
model sources and the picker's sentences, each refusal one sentence (gr.Error) with a log line
that never holds the visitor's text."""

from __future__ import annotations

import logging

import gradio as gr

from lstm_model.hub import bundled_models
from lstm_model.sampling import SamplingError, as_number
from lstm_model.serving import Serving
from lstm_model.sources import repo_id_form
from lstm_model.vocab import unescape

log = logging.getLogger("lstm_memory_chat")
# The controls' defaults: the page's, the API's and the stream route's when a value is left out.
DEFAULTS = dict(temperature=0.8, top_k=40, top_p=1.0, max_chars=500, seed=-1, memory=True)
# The ranges of the sampling controls, for the page's sliders and for values sent to the API.
RANGES = dict(temperature=(0.05, 2.0), top_p=(0.05, 1.0), max_chars=(1, 5000))


def sampling_from(temperature, top_k, top_p, max_chars, seed, stop) -> dict:
    """ChatSession's sampling settings from the controls' values (or the API's), or gr.Error with
    one sentence for a value out of range or of the wrong type."""

    def number(label, value, kind, default):
        if value is None or value == "":
            return default
        if isinstance(value, str):  # raw JSON may carry numbers as text ("0.8", "NaN")
            try:
                value = float(value)
            except ValueError:
                pass  # as_number says what is wrong with it
        try:
            return as_number(label, value, kind)
        except SamplingError as err:
            raise refusal(str(err), "settings") from None

    def within(label, value, name):
        low, high = RANGES[name]
        if not low <= value <= high:
            raise refusal(f"{label} must be from {low:g} to {high:g}; got {value:g}.", "settings")
        return value

    temperature = within("Temperature", number("Temperature", temperature, float, DEFAULTS["temperature"]), "temperature")
    top_p = within("Top-p", number("Top-p", top_p, float, DEFAULTS["top_p"]), "top_p")
    max_chars = within("Max characters", number("Max characters", max_chars, int, DEFAULTS["max_chars"]), "max_chars")
    top_k, seed = number("Top-k", top_k, int, DEFAULTS["top_k"]), number("Seed", seed, int, DEFAULTS["seed"])
    if top_k < 0:
        raise refusal(f"Top-k must be 0 (off) or more; got {top_k}.", "settings")
    settings = dict(temperature=temperature, top_k=top_k or None, top_p=top_p if top_p < 1 else None,
                    max_new_chars=max_chars, seed=seed if seed >= 0 else None)
    if stop is not None:
        settings["stop"] = unescape(checked_text("The stop sequence", stop)) or None
    return settings


def is_local_path(source: str) -> bool:
    """Whether a visitor's model source is a path on this server's disk, told by its spelling alone:
    not a bundled name, and not of a Hub repo id's form (user/name[@revision]): it starts with ".",
    "/", "~" or a backslash, or has a number of slashes other than one. A source of the repo id's
    form is always looked up on the Hub, whatever the disk holds, so that no answer tells a visitor
    whether a file of that name exists."""
    return source not in bundled_models() and not repo_id_form(source)


def load_error(source: str, err: Exception) -> str:
    """A model loading error for a visitor: nothing about what exists on the server's disk."""
    if is_local_path(source):
        return ("Could not load a model from that local path; the app loads a folder written by save_pretrained() "
                "that it can read, a bundled model's name or a Hub repo id (user/name[@revision]).")
    from huggingface_hub import constants

    return str(err).replace(constants.HF_HUB_CACHE, "the Hub cache")


class Busy(gr.Error):
    """The server is writing as many replies as it takes (or holds as many sessions as it can):
    the message was not sent."""

    def __init__(self, message: str):
        super().__init__(message, print_exception=False)
        log.info("refused: busy")


def refusal(sentence: str, what: str) -> gr.Error:
    """A visitor's request refused with one sentence: no traceback in the log, and a log line that
    names only what was refused (`what`), never the visitor's text."""
    log.info("refused: %s", what)
    return gr.Error(sentence, print_exception=False)


def checked_text(label: str, value) -> str:
    """Text a visitor sent, checked where it enters: a string that UTF-8 can carry (a lone surrogate,
    which JSON can spell, could be fed and stored but never sent back)."""
    if not isinstance(value, str):
        raise refusal(f"{label} must be text.", "not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise refusal(f"{label} holds a lone surrogate (half of a character); remove it and send again.",
                      "lone surrogate") from None
    return value


def direct_call(request: gr.Request | None) -> bool:
    """Whether the request is a direct POST to /gradio_api/run/<name> (or /api/<name>): Gradio answers
    those with a handler's first output and drops the rest, where its queue streams them all."""
    try:
        parts = request.request.url.path.rstrip("/").split("/")
    except AttributeError:
        return False
    return len(parts) >= 2 and parts[-2] in ("run", "api")


def already_serving(name: str) -> str:
    return f"Already serving **{name}**: nothing changed, and the conversation goes on."


def path_form(source: str) -> bool:
    """Whether a visitor's text is spelled as a path: it starts as one does (".", "/", "~", a
    backslash, a drive letter) or holds a slash. Anything else that is neither a model's name nor
    a Hub repo id is answered with what a repo id looks like, not looked for on the disk."""
    return (source.startswith((".", "/", "~", "\\")) or "/" in source or "\\" in source
            or (len(source) > 1 and source[1] == ":" and source[0].isalpha()))


def custom_models_off(choices: list[str]) -> str:
    names = ", ".join(choices[:-1]) + f" and {choices[-1]}" if len(choices) > 1 else ", ".join(choices)
    return (f"This app serves only {names}: loading other Hub repos or local folders is switched off here, so pick "
            "one of those, or run the app on your own machine to load your own model.")


def serving_line(name: str, serving: Serving) -> str:
    return f"Serving **{name}** ({serving.model.num_parameters():,} parameters; {serving.describe()})"
