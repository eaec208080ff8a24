"""Generator streams as HTTP answers: first-chunk wait, collection, SSE events.

Knows the OpenAI streaming payloads (chunks, usage chunk, `[DONE]`, an error
as the final event; sse-starlette frames them); knows nothing of where the
chunks come from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse

from graph.api import protocol as p
from graph.errors import sse_error, to_api_error
from models.generation import Chunk

logger = logging.getLogger("ragserve.api")


async def first_chunk(stream: AsyncIterator[Chunk]) -> Chunk:
    """Wait for the first chunk, so errors before generation starts
    (prompt too long, overload) become a plain HTTP error, not a broken stream."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        raise RuntimeError("generator ended without a final chunk") from None
    except BaseException:
        await close(stream)
        raise


async def close(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing must not mask the original error
            logger.debug("closing a stream failed", exc_info=True)


async def collect(first: Chunk, stream: AsyncIterator[Chunk]) -> tuple[str, Chunk]:
    """The whole text and the final chunk (which carries usage)."""
    parts = [first.text]
    final = first
    try:
        async for chunk in stream:
            parts.append(chunk.text)
            final = chunk
    finally:
        await close(stream)
    if final.finish_reason is None:
        raise RuntimeError("generator stream ended without a finish reason")
    return "".join(parts), final


def usage(final: Chunk) -> p.Usage:
    return p.Usage(
        prompt_tokens=final.prompt_tokens,
        completion_tokens=final.completion_tokens,
        total_tokens=final.prompt_tokens + final.completion_tokens,
    )


#: Seconds between keep-alive comments while a stream is silent (a long
#: prefill), so proxies do not close it as idle.
PING_S = 15


def sse(events: AsyncIterator[str]) -> EventSourceResponse:
    """The payloads as an event stream: sse-starlette frames each as a `data:`
    event (`\n` line ends, as OpenAI sends them), sends keep-alive comments
    and stops the generator when the client goes away."""
    return EventSourceResponse(events, sep="\n", ping=PING_S)


def _data(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _event(body: p.ChatCompletionChunk | p.CompletionResponse) -> str:
    """An SSE event; top-level fields that are unset (usage, citations) are left
    out, while `finish_reason: null` stays as OpenAI sends it."""
    data = body.model_dump(mode="json")
    return _data({k: v for k, v in data.items() if v is not None})


async def _chunks(first: Chunk, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    yield first
    async for chunk in stream:
        yield chunk


async def chat_events(
    rid: str,
    model: str,
    citations: list[p.Citation],
    first: Chunk,
    stream: AsyncIterator[Chunk],
    include_usage: bool,
    fingerprint: str | None = None,
) -> AsyncIterator[str]:
    """`chat.completion.chunk` events: the role (with citations), the text,
    the usage chunk if asked, and `[DONE]`; each names the release."""
    created = p.now()

    def chunk(delta: p.DeltaMessage, finish: str | None = None, **extra: Any) -> str:
        body = p.ChatCompletionChunk(
            id=rid,
            created=created,
            model=model,
            choices=[p.ChatChunkChoice(delta=delta, finish_reason=finish)],
            system_fingerprint=fingerprint,
            **extra,
        )
        return _event(body)

    yield chunk(p.DeltaMessage(role="assistant", content=""), citations=citations)
    final: Chunk | None = None
    try:
        async for piece in _chunks(first, stream):
            if piece.text or piece.finish_reason:
                yield chunk(p.DeltaMessage(content=piece.text), piece.finish_reason)
            final = piece
        if include_usage and final is not None:
            last = p.ChatCompletionChunk(
                id=rid,
                created=created,
                model=model,
                choices=[],
                usage=usage(final),
                system_fingerprint=fingerprint,
            )
            yield _event(last)
    except Exception as exc:  # a failure after the headers went out
        yield sse_error(to_api_error(exc, rid))
    finally:
        await close(stream)
    yield "[DONE]"


async def completion_events(
    rid: str,
    model: str,
    first: Chunk,
    stream: AsyncIterator[Chunk],
    include_usage: bool,
    fingerprint: str | None = None,
) -> AsyncIterator[str]:
    """`text_completion` events, the usage chunk if asked, and `[DONE]`."""
    created = p.now()

    def event(choices: list[p.CompletionChoice], **extra: Any) -> str:
        body = p.CompletionResponse(
            id=rid,
            created=created,
            model=model,
            choices=choices,
            system_fingerprint=fingerprint,
            **extra,
        )
        return _event(body)

    final: Chunk | None = None
    try:
        async for piece in _chunks(first, stream):
            if piece.text or piece.finish_reason:
                choice = p.CompletionChoice(
                    text=piece.text, finish_reason=piece.finish_reason
                )
                yield event([choice])
            final = piece
        if include_usage and final is not None:
            yield event([], usage=usage(final))
    except Exception as exc:
        yield sse_error(to_api_error(exc, rid))
    finally:
        await close(stream)
    yield "[DONE]"
