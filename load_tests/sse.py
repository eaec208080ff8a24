"""Server-sent events: an incremental parser and the OpenAI chunk reading on top.

Knows the SSE framing (WHATWG rules for `data:` and comment lines, any of the
three line endings, events split across network reads) and what an OpenAI
streaming chunk carries (text, usage, an error envelope, `[DONE]`); knows
nothing of timing, which the caller takes as events arrive.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any


class SSEParser:
    """Turns arbitrary slices of an SSE byte stream into complete event payloads."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes | str) -> list[str]:
        """Add bytes read from the network.

        Args:
            chunk: the next slice of the stream, cut anywhere (even inside a
                multi-byte character or between `\\r` and `\\n`).

        Returns:
            The data of each event completed by this slice (multi-line `data:`
            fields joined with newlines), in order.
        """
        text = chunk if isinstance(chunk, str) else self._decoder.decode(chunk)
        buf = self._pending + text
        # A trailing "\r" may be the first half of "\r\n": wait for the next read.
        hold = buf.endswith("\r")
        if hold:
            buf = buf[:-1]
        lines = buf.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop() + ("\r" if hold else "")
        events: list[str] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value.removeprefix(" "))
        return events

    def close(self) -> list[str]:
        """End of stream: an event without its blank line is dropped, per spec."""
        self._pending = ""
        self._data = []
        return []


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
