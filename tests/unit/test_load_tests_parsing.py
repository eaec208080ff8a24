"""What the load tests read and compute, without a server: percentiles, SSE
framing and OpenAI events, and Serve controller scaling lines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import EventSource

from load_tests.sse import read_event
from load_tests.stats import percentile

# --- percentiles ----------------------------------------------------------------


def test_percentiles_interpolate_between_closest_ranks() -> None:
    # 1..10 in any order: rank (n - 1) * q / 100, linear between neighbours.
    values = [7.0, 3.0, 10.0, 1.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 5.5
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 100) == 10.0
    assert percentile([42.0], 99) == 42.0


def test_percentile_of_nothing_is_none_and_q_is_checked() -> None:
    assert percentile([], 95) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --- SSE parsing ----------------------------------------------------------------


class _TwoReads(httpx.AsyncByteStream):
    """A response body that arrives in two network reads."""

    def __init__(self, first: bytes, second: bytes) -> None:
        self.parts = (first, second)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


async def _events_as_the_runner_reads_them(first: bytes, second: bytes) -> list:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=_TwoReads(first, second))

    transport = httpx.MockTransport(answer)
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("POST", "http://sse.test/") as response,
    ):
        return [sse.data async for sse in EventSource(response).aiter_sse()]


def test_sse_events_survive_any_split_point() -> None:
    stream = (
        ": keep-alive comment\r\n"
        'data: {"choices":[{"delta":{"content":"héllo"}}]}\r\n\r\n'
        "data: line one\n"
        "data: line two\n\n"
        'data: {"choices":[{"text":"€"}]}\r\r'
        "data: [DONE]\n\n"
    ).encode()
    expected = [
        '{"choices":[{"delta":{"content":"héllo"}}]}',
        "line one\nline two",
        '{"choices":[{"text":"€"}]}',
        "[DONE]",
    ]

    # Cut the bytes at every position, including inside "é", "€" and "\r\n".
    for cut in range(len(stream) + 1):
        halves = stream[:cut], stream[cut:]
        events = asyncio.run(_events_as_the_runner_reads_them(*halves))
        assert events == expected, cut


def test_openai_events_are_read_for_text_usage_errors_and_done() -> None:
    assert read_event('{"choices":[{"delta":{"content":"a"}}]}').text == "a"
    assert read_event('{"choices":[{"text":"b"}]}').text == "b"
    usage = read_event('{"choices":[],"usage":{"completion_tokens":4}}').usage
    assert usage == {"completion_tokens": 4}
    assert read_event('{"error":{"message":"boom"}}').error == "boom"
    assert read_event("[DONE]").done
    assert read_event("not json").error


# --- scaling decisions ----------------------------------------------------------


def test_serve_controller_scaling_lines_become_timeline_events() -> None:
    from load_tests.servers.replicas import parse_decision

    line = (
        "INFO 2026-11-23 15:48:55,800 controller 13300 -- Upscaling "
        "Deployment(name='embedder', app='autoscale') from 1 to 3 replicas. "
        "Current ongoing requests: 7.40, current running replicas: 1."
    )
    event = parse_decision(line)
    assert event is not None
    assert event["event"] == "scale"
    assert (event["app"], event["deployment"]) == ("autoscale", "embedder")
    assert (event["from"], event["to"], event["running"]) == (1, 3, 1)
    assert event["ongoing_requests"] == 7.4
    assert time.localtime(event["t"]).tm_min == 48
    assert parse_decision("INFO ... -- Adding 1 replica to Deployment(...)") is None
