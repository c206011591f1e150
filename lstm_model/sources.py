"""Where a model or a dataset comes from: a path on this disk, or a Hub repo id.

Two questions, answered once here. The library asks what the disk holds (`is_local`): a path that
exists is read from disk. A visitor's text is judged by its spelling alone (`repo_id_form`), so
that no answer tells a visitor whether a file of some name exists on the server.
"""

from __future__ import annotations

import os

_PATH_STARTS = (".", "/", "~", "\\")


def is_local(source: str | os.PathLike, hub_only: bool = False) -> bool:
    """Whether `source` is read from this disk: a path that exists, unless `hub_only` (then it is a
    Hub repo id whatever the disk holds)."""
    return not hub_only and os.path.exists(source)


def repo_id_form(source: str) -> bool:
    """Whether `source` is spelled as a Hub repo id, `user/name[@revision]`: one slash, no
    backslash, not starting as a path does ('.', '/', '~')."""
    return not source.startswith(_PATH_STARTS) and "\\" not in source and source.count("/") == 1
