"""The bytes an SSE answer puts on the wire (graph.api.streaming over sse-starlette)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from graph.api import streaming


def client(pause_s: float) -> TestClient:
    app = FastAPI()

    @app.get("/stream")
    async def stream():
        async def events() -> AsyncIterator[str]:
            yield streaming._data({"choices": [{"delta": {"content": "a"}}]})
            await asyncio.sleep(pause_s)  # a silent stretch (a long prefill)
            yield "[DONE]"

        return streaming.sse(events())

    return TestClient(app)


def test_events_are_openai_framed_and_kept_alive(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(streaming, "PING_S", 0.2)

    r = client(pause_s=0.7).get("/stream")

    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-accel-buffering"] == "no"
    assert r.text.startswith('data: {"choices":[{"delta":{"content":"a"}}]}\n\n')
    assert r.text.endswith("data: [DONE]\n\n")
    # Keep-alive comments fill the silence; clients skip them.
    assert ": ping" in r.text
    assert "\r" not in r.text
