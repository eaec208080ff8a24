"""Deadlines and step retries (graph.resilience) over stand-in handles, no Ray
cluster: Ray's own exception classes, the real middleware in a FastAPI app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from graph.api.handlers import install_error_handlers
from graph.config import ConfigError, RagServingArgs
from graph.errors import APIError, to_api_error
from graph.resilience import (
    Deadline,
    DeadlineMiddleware,
    StepCaller,
    current_deadline,
    guard_stream,
    replica_lost,
    request_budget,
    set_deadline,
)
from graph.resilience_config import ResilienceConfig


class FakeResponse:
    """What `handle.method.remote()` returns: awaitable and cancellable."""

    def __init__(self, work: Awaitable[Any]) -> None:
        self.work = work
        self.cancelled = False

    def __await__(self) -> Any:
        return self.work.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class FakeMethod:
    """A handle method whose calls behave, in turn, as `behaviours` say."""

    def __init__(self, *behaviours: Callable[..., Awaitable[Any]]) -> None:
        self.behaviours = list(behaviours)
        self.calls: list[tuple[Any, ...]] = []
        self.responses: list[FakeResponse] = []

    def remote(self, *args: Any) -> FakeResponse:
        self.calls.append(args)
        response = FakeResponse(self.behaviours.pop(0)(*args))
        self.responses.append(response)
        return response


async def ok(*args: Any) -> str:
    return f"ok {args[0]}"


async def died(*args: Any) -> Any:
    raise ActorDiedError()


async def unavailable(*args: Any) -> Any:
    raise ActorUnavailableError("gone", None)


async def hang(*args: Any) -> Any:
    await asyncio.sleep(3600)


async def step_timeout(*args: Any) -> Any:
    raise TimeoutError("the step's own timeout")


def caller(**cfg: Any) -> StepCaller:
    return StepCaller(ResilienceConfig(**cfg), lambda: {"traceparent": "x"})


async def test_a_call_whose_replica_died_is_sent_once_more() -> None:
    method = FakeMethod(died, ok)
    assert await caller()("embed", method, "q") == "ok q"
    assert len(method.calls) == 2
    # A fresh trace carrier goes with each attempt.
    assert all(call[-1] == {"traceparent": "x"} for call in method.calls)


async def test_a_second_loss_is_a_503_with_retry_after() -> None:
    method = FakeMethod(unavailable, died)
    with pytest.raises(APIError) as info:
        await caller(retry_after_s=7)("rerank", method, "q")
    err = info.value
    assert (err.status, err.code, err.retry_after) == (503, "replica_unavailable", 7)
    assert "rerank" in err.message
    assert len(method.calls) == 2


async def test_no_retries_when_configured_off() -> None:
    method = FakeMethod(died, ok)
    with pytest.raises(APIError) as info:
        await caller(step_retries=0)("embed", method, "q")
    assert info.value.status == 503
    assert len(method.calls) == 1


async def test_other_errors_are_not_retried() -> None:
    async def boom(*args: Any) -> Any:
        raise ValueError("bad input")

    method = FakeMethod(boom, ok)
    with pytest.raises(ValueError, match="bad input"):
        await caller()("embed", method, "q")
    assert len(method.calls) == 1


async def test_a_retry_is_bounded_in_time() -> None:
    method = FakeMethod(died, hang)
    with pytest.raises(APIError) as info:
        await caller(step_retry_timeout_s=0.1)("retrieve", method, "q")
    assert (info.value.status, info.value.code) == (503, "replica_unavailable")
    assert method.responses[1].cancelled


async def test_a_stuck_step_ends_at_the_deadline_as_504() -> None:
    method = FakeMethod(hang)
    token = set_deadline(Deadline.after(0.1))
    try:
        with pytest.raises(APIError) as info:
            await caller()("embed", method, "q")
    finally:
        set_deadline(None)
        del token
    assert (info.value.status, info.value.code) == (504, "deadline_exceeded")
    assert method.responses[0].cancelled


async def test_a_timeout_raised_by_the_step_itself_is_not_a_deadline() -> None:
    with pytest.raises(TimeoutError, match="own timeout"):
        await caller()("embed", FakeMethod(step_timeout), "q")


async def test_a_passed_deadline_sends_nothing() -> None:
    method = FakeMethod(ok)
    set_deadline(Deadline(expires_at=0.0, budget_s=1.0))
    try:
        with pytest.raises(APIError) as info:
            await caller()("embed", method, "q")
    finally:
        set_deadline(None)
    assert info.value.status == 504
    assert method.calls == []


def test_replica_lost_knows_rays_errors() -> None:
    assert replica_lost(ActorDiedError())
    assert replica_lost(ActorUnavailableError("gone", None))
    wrapped = RayTaskError("embed", "tb", ActorDiedError())
    assert replica_lost(wrapped)
    assert not replica_lost(RayTaskError("embed", "tb", ValueError("x")))
    assert not replica_lost(ValueError("x"))
    # The envelope for any path that meets one unguarded.
    err = to_api_error(ActorDiedError())
    assert (err.status, err.code, err.retry_after) == (503, "replica_unavailable", 5)


class FakeStream:
    """What `handle.options(stream=True).generate.remote()` returns."""

    def __init__(self, items: AsyncIterator[Any]) -> None:
        self.items = items
        self.cancelled = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Any:
        return await anext(self.items)

    def cancel(self) -> None:
        self.cancelled = True


async def chunks(*items: Any, fail: BaseException | None = None, stall: float = 0):
    for item in items:
        yield item
    if stall:
        await asyncio.sleep(stall)
    if fail is not None:
        raise fail


async def drain(stream: FakeStream, **cfg: Any) -> list[Any]:
    out = []
    async for item in guard_stream(stream, ResilienceConfig(**cfg)):
        out.append(item)
    return out


async def test_a_whole_stream_passes_and_is_not_cancelled() -> None:
    stream = FakeStream(chunks("a", "b"))
    assert await drain(stream) == ["a", "b"]
    assert not stream.cancelled


async def test_a_generator_lost_mid_stream_is_a_503() -> None:
    stream = FakeStream(chunks("a", fail=ActorDiedError()))
    out: list[Any] = []
    with pytest.raises(APIError) as info:
        async for item in guard_stream(stream, ResilienceConfig(retry_after_s=9)):
            out.append(item)
    assert out == ["a"]
    err = info.value
    assert (err.status, err.code, err.retry_after) == (503, "generator_unavailable", 9)
    assert stream.cancelled


async def test_a_generation_that_does_not_start_is_a_503() -> None:
    stream = FakeStream(chunks(stall=3600))
    with pytest.raises(APIError) as info:
        await drain(stream, generate_start_timeout_s=0.1)
    assert (info.value.status, info.value.code) == (503, "generator_unavailable")
    assert "0.1 s" in info.value.message
    assert stream.cancelled


async def test_a_stream_stalled_past_the_deadline_is_a_504() -> None:
    stream = FakeStream(chunks("a", stall=3600))
    set_deadline(Deadline.after(0.2))
    try:
        with pytest.raises(APIError) as info:
            await drain(stream)
    finally:
        set_deadline(None)
    assert info.value.status == 504
    assert stream.cancelled


async def test_leaving_a_stream_early_cancels_it() -> None:
    stream = FakeStream(chunks("a", "b", "c"))
    gen = guard_stream(stream, ResilienceConfig())
    assert await anext(gen) == "a"
    await gen.aclose()
    assert stream.cancelled


def test_request_budget_from_the_header() -> None:
    cfg = ResilienceConfig(request_timeout_s=60)
    assert request_budget(None, cfg) == 60
    assert request_budget("2.5", cfg) == 2.5
    assert request_budget("600", cfg) == 60  # never more than the server's
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(APIError) as info:
            request_budget(bad, cfg)
        assert (info.value.status, info.value.param) == (400, "X-Request-Timeout")


def test_the_middleware_gives_every_request_its_deadline() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/budget")
    async def budget() -> dict[str, float]:
        deadline = current_deadline()
        assert deadline is not None
        return {"budget": deadline.budget_s, "left": deadline.remaining()}

    app.add_middleware(
        DeadlineMiddleware, config=ResilienceConfig(request_timeout_s=30)
    )
    with TestClient(app) as client:
        body = client.get("/budget").json()
        assert body["budget"] == 30 and 0 < body["left"] <= 30
        assert client.get("/budget", headers={"X-Request-Timeout": "3"}).json()[
            "budget"
        ] == pytest.approx(3)
        r = client.get("/budget", headers={"X-Request-Timeout": "never"})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "X-Request-Timeout"


def test_bounds_longer_than_the_deadline_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        RagServingArgs.load(
            {"resilience": {"request_timeout_s": 10, "step_retry_timeout_s": 20}}
        )
    message = str(info.value)
    assert "resilience.step_retry_timeout_s" in message
    assert "resilience.request_timeout_s" in message
    with pytest.raises(ConfigError, match="unknown config key"):
        RagServingArgs.load({"resilience": {"retries": 2}})
