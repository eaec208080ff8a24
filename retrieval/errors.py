"""Errors raised while loading documents, building or loading an index.

Every message is one line, safe to show a user, and names the fix.
"""

from __future__ import annotations

import shlex
from pathlib import Path

BUILD_COMMAND = "ragserve index build --docs DIR --out DIR"


class RetrievalError(Exception):
    """Base class: the index or its documents cannot be used as asked."""


class DocumentError(RetrievalError):
    """The docs folder is missing or empty, or a file in it cannot be read."""


class IndexNotFoundError(RetrievalError):
    """No index (no manifest.json) where one was expected."""


class IndexMismatchError(RetrievalError):
    """The index was built with another embedder than the configured one."""


def build_command_for(folder: Path) -> str:
    """The command that builds an index at `folder`, quoted for a shell."""
    return f"ragserve index build --docs DIR --out {shlex.quote(str(folder))}"


def index_corrupt(folder: Path, what: str) -> RetrievalError:
    """The error for an index at `folder` whose `what` is damaged."""
    return RetrievalError(
        f"index {folder} is corrupt: {what}; rebuild it with "
        f"`{build_command_for(folder)}`"
    )
