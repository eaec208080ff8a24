"""Errors raised while loading documents, building or loading an index.

Every message is one line, safe to show a user, and names the fix.
"""

from __future__ import annotations

BUILD_COMMAND = "ragserve index build --docs DIR --out DIR"


class RetrievalError(Exception):
    """Base class: the index or its documents cannot be used as asked."""


class DocumentError(RetrievalError):
    """The docs folder is missing or empty, or a file in it cannot be read."""


class IndexNotFoundError(RetrievalError):
    """No index (no manifest.json) where one was expected."""


class IndexMismatchError(RetrievalError):
    """The index was built with another embedder than the configured one."""
