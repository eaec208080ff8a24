"""How many items a request's lists may hold (`limits.max_messages`, ...),
refused while its body is validated and before any item is.

The request models are static, the limits are each app's config: an ASGI
middleware (`CountLimits`) puts the app's `limits` in a context variable for
the request, and the models' before-validators (`counted`) read it, so
20,000 messages are refused by their count without 20,000 messages being
built. Outside a request (a model validated directly) nothing is checked
here; `graph.api.limits` checks the same counts again after validation.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from graph.errors import LIMIT_EXCEEDED
from graph.limits_config import LimitsConfig

__all__ = ["LIMIT_EXCEEDED", "CountLimits", "counted", "too_many"]

#: Which `limits` key bounds each counted field.
KEYS = {
    "messages": "max_messages",
    "input": "max_embedding_inputs",
    "documents": "max_rerank_documents",
}

_LIMITS: ContextVar[LimitsConfig | None] = ContextVar("ragserve_limits", default=None)


def too_many(param: str, count: int, limit: int, key: str) -> str:
    """The refusal's message, the same wherever the count is checked."""
    return f"{param} has {count} items; at most {limit} (limits.{key})"


def counted(param: str) -> BeforeValidator:
    """A before-validator refusing a list `param` longer than its limit."""
    key = KEYS[param]

    def check(value: Any) -> Any:
        limits = _LIMITS.get()
        # A flat list of token ids is one input, not a list of them.
        ids = bool(value) and isinstance(value, list) and isinstance(value[0], int)
        if limits is not None and isinstance(value, list) and not ids:
            limit = getattr(limits, key)
            if len(value) > limit:
                raise PydanticCustomError(
                    LIMIT_EXCEEDED, too_many(param, len(value), limit, key)
                )
        return value

    return BeforeValidator(check)


class CountLimits:
    """ASGI middleware: the app's `limits` (as `limits()` gives them when the
    request arrives, so a changed config holds) for its requests' validators."""

    def __init__(self, app: Any, limits: Callable[[], LimitsConfig]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        token = _LIMITS.set(self.limits())
        try:
            await self.app(scope, receive, send)
        finally:
            _LIMITS.reset(token)
