"""Coalescing a stream for one hop: first item at once, the rest by window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from batching.stream import coalesce


async def paced(items: list[int], gaps_s: list[float]) -> AsyncIterator[int]:
    for item, gap in zip(items, gaps_s, strict=True):
        await asyncio.sleep(gap)
        yield item


async def collect(stream: AsyncIterator[list[int]]) -> list[list[int]]:
    return [batch async for batch in stream]


def test_first_item_alone_then_windows_keep_order() -> None:
    # 1 after 0 s; 2-4 close together; 5 long after.
    source = paced([1, 2, 3, 4, 5], [0, 0.01, 0.001, 0.001, 0.3])
    batches = asyncio.run(collect(coalesce(source, 0.05)))
    assert batches[0] == [1]
    assert [x for b in batches for x in b] == [1, 2, 3, 4, 5]
    assert [2, 3, 4] in batches  # one message for the burst
    assert batches[-1] == [5]


def test_zero_window_is_one_list_per_item() -> None:
    batches = asyncio.run(collect(coalesce(paced([1, 2, 3], [0, 0, 0]), 0)))
    assert batches == [[1], [2], [3]]


def test_an_error_arrives_after_the_items_before_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("engine died")

    async def run() -> list[int]:
        seen: list[int] = []
        with pytest.raises(ValueError, match="engine died"):
            async for batch in coalesce(failing(), 0.01):
                seen.extend(batch)
        return seen

    assert asyncio.run(run()) == [1, 2]


def test_closing_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                await asyncio.sleep(0.001)
                i += 1
                yield i
        finally:
            closed.set()

    async def run() -> bool:
        stream = coalesce(endless(), 0.01)
        first = await anext(stream)
        assert first == [1]
        await anext(stream)
        await stream.aclose()
        return closed.is_set()

    assert asyncio.run(run())
