"""Coalescing a token stream into short time windows for one network hop.

Knows how to group the items of an async stream: the first goes on alone at
once, later ones in lists of whatever arrived within a window (as Ray Serve
LLM's `Batcher` does for its replicas, but without holding the first item
back); knows nothing of tokens, handles or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar, cast

T = TypeVar("T")

_DONE = object()


async def coalesce(stream: AsyncIterator[T], window_s: float) -> AsyncIterator[list[T]]:
    """Yield the items of `stream` in lists, one list per window.

    The first item is yielded alone as soon as it arrives (time to first
    token does not pay a window); after it, items that arrive within
    `window_s` of each other's window go out together. With `window_s` 0
    every item is its own list. An error in `stream` is raised after the
    items before it went out; closing this generator closes `stream`.

    Args:
        stream: the source; read by a task of its own.
        window_s: seconds a window stays open (>= 0).

    Yields:
        Non-empty lists, in stream order.
    """
    if window_s <= 0:
        async for item in stream:
            yield [item]
        return
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
        finally:
            queue.put_nowait(_DONE)

    reader = asyncio.create_task(pump())
    try:
        first = True
        done = False
        while not done:
            got = await queue.get()
            if got is _DONE:
                break
            batch = [cast(T, got)]
            if not first:
                await asyncio.sleep(window_s)
            first = False
            while not queue.empty():
                nxt = queue.get_nowait()
                if nxt is _DONE:
                    done = True
                    break
                batch.append(cast(T, nxt))
            yield batch
        await reader  # raises what the stream raised
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
