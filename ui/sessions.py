"""Gradio's per-session state, made cheaper to start.

Gradio makes a `SessionState` for every new session (a browser tab, an API client) on its event
loop, and its constructor copies the page config of every component, used only for deep links and
changed component values, for every block of the page, in line for everyone else: a crowd arriving
at once waits for it (benchmarks/README.md, "A crowd arriving at once"). `LazySessionState` makes each entry when it
is first needed instead; everything else is Gradio's own. `use_lazy_session_state()` installs it for
the process (gradio is pinned in requirements.txt; tests/test_app.py checks that both classes
give the same configs).
"""

from __future__ import annotations

from copy import copy
from types import SimpleNamespace

import gradio.state_holder as state_holder

GradioSessionState = state_holder.SessionState


class LazySessionState(GradioSessionState):
    """A SessionState that makes a component's config entry when it is first needed: Gradio
    updates the entries of an event's inputs (`_update_value_in_config`: one entry each), and a
    deep link reads them all (`components`: the rest are made then)."""

    def __init__(self, blocks):
        self._blocks = blocks
        # Gradio's own constructor, with nothing to copy; then the real (shallow-copied) config.
        super().__init__(SimpleNamespace(default_config=SimpleNamespace(blocks={}), blocks={}))
        self.blocks_config = copy(blocks.default_config)

    @property
    def components(self):
        missing = [k for k in self.blocks_config.blocks if k in self._blocks.blocks and k not in self.config_values]
        for k in missing:
            self.config_values[k] = self.blocks_config.config_for_block(k, [], self.blocks_config.blocks[k])
        return super().components


def use_lazy_session_state() -> None:
    """Make Gradio's StateHolder create LazySessionState for new sessions."""
    state_holder.SessionState = LazySessionState
