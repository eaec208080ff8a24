"""What an OpenAI streaming event's data means (text, usage, an error envelope,
`[DONE]`); the SSE framing itself is httpx-sse's, and timing is the caller's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StreamEvent:
    """What one OpenAI streaming event means to a client."""

    text: str = ""
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False


def read_event(data: str) -> StreamEvent:
    """Interpret one SSE payload from `/v1/chat/completions` or `/v1/completions`.

    Args:
        data: the event's data field.

    Returns:
        The generated text it carries (chat `delta.content` or completion
        `text`), its usage block, the error message of an error envelope, or
        `done` for `[DONE]`. A payload that is not JSON is an error.
    """
    if data.strip() == "[DONE]":
        return StreamEvent(done=True)
    try:
        obj = json.loads(data)
    except ValueError:
        return StreamEvent(error=f"not JSON: {data[:80]!r}")
    if not isinstance(obj, dict):
        return StreamEvent(error="event is not a JSON object")
    if "error" in obj:
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        return StreamEvent(error=str(message or "error event"))
    parts: list[str] = []
    for choice in obj.get("choices") or []:
        delta = choice.get("delta") or {}
        parts.append(delta.get("content") or choice.get("text") or "")
    usage = obj.get("usage")
    return StreamEvent(text="".join(parts), usage=usage if usage else None)
