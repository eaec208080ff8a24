"""Deadlines and retries around the ingress's handle calls.

Knows a request's deadline (set once per HTTP request by `DeadlineMiddleware`,
read by every handle call made on its behalf), which Ray errors mean "the
replica is gone", and how to turn a lost replica or a passed deadline into a
503/504 envelope; knows nothing of the routes or of what a step computes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from graph.errors import (
    APIError,
    error_response,
    is_overload,
    overloaded,
    replica_lost,
)
from graph.resilience_config import ResilienceConfig

logger = logging.getLogger("ragserve.resilience")

TIMEOUT_HEADER = "x-request-timeout"


@dataclass(frozen=True)
class Deadline:
    """When the current request must be answered (monotonic clock)."""

    expires_at: float
    budget_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def exceeded(self) -> APIError:
        return APIError(
            504,
            f"The request did not finish within its deadline of {self.budget_s:g} s.",
            code="deadline_exceeded",
        )


_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "ragserve_deadline", default=None
)


def current_deadline() -> Deadline | None:
    return _deadline.get()


def set_deadline(deadline: Deadline | None) -> contextvars.Token[Deadline | None]:
    return _deadline.set(deadline)


def request_budget(header: str | None, config: ResilienceConfig) -> float:
    """The deadline a request gets: the configured one, or less if asked.

    Raises:
        APIError: 400 when the X-Request-Timeout header is not a positive
            number of seconds.
    """
    if header is None:
        return config.request_timeout_s
    try:
        asked = float(header)
    except ValueError:
        asked = math.nan
    if not math.isfinite(asked) or asked <= 0:
        raise APIError(
            400,
            "X-Request-Timeout must be a positive number of seconds.",
            param="X-Request-Timeout",
            code="invalid_value",
        )
    return min(asked, config.request_timeout_s)


class DeadlineMiddleware:
    """ASGI middleware: each HTTP request gets its `Deadline` before any route
    runs; the handle calls it makes (including a stream's) read it."""

    def __init__(self, app: Any, config: ResilienceConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope.get("headers", []):
            if key.decode("latin-1").lower() == TIMEOUT_HEADER:
                header = value.decode("latin-1")
        try:
            budget = request_budget(header, self.config)
        except APIError as err:
            await error_response(err)(scope, receive, send)
            return
        token = set_deadline(Deadline.after(budget))
        try:
            await self.app(scope, receive, send)
        finally:
            _deadline.reset(token)


class _Expired(Exception):
    """Our own timeout ran out (not a TimeoutError raised by a step)."""


async def _within(seconds: float, make: Callable[[], Awaitable[Any]]) -> Any:
    """Await what `make()` returns for at most `seconds`; `_Expired` when they
    run out (`make` is not called when none are left)."""
    if seconds <= 0:
        raise _Expired
    try:
        async with asyncio.timeout(None if math.isinf(seconds) else seconds) as cm:
            return await make()
    except TimeoutError:
        if cm.expired():
            raise _Expired from None
        raise


def _bound(deadline: Deadline | None, limit_s: float | None) -> tuple[float, bool]:
    """Seconds left and whether the request's deadline (not `limit_s`) is
    the nearer bound."""
    left = deadline.remaining() if deadline is not None else math.inf
    if limit_s is not None and limit_s < left:
        return limit_s, False
    return left, deadline is not None


class StepCaller:
    """Calls one idempotent step's handle method under the request's deadline,
    retrying once (by default) on a live or replacement replica when the
    replica it reached died."""

    def __init__(self, config: ResilienceConfig, carrier: Callable[[], Any]) -> None:
        self.config = config
        self.carrier = carrier

    async def __call__(self, step: str, method: Any, *args: Any) -> Any:
        attempt = 0
        retry_until: float | None = None
        while True:
            limit = None if retry_until is None else retry_until - time.monotonic()
            deadline = current_deadline()
            left, by_deadline = _bound(deadline, limit)
            try:
                return await self._once(method, args, left)
            except _Expired:
                if by_deadline and deadline is not None:
                    raise deadline.exceeded() from None
                raise self._unavailable(step) from None
            except Exception as exc:
                if is_overload(exc):
                    raise overloaded(exc) from None
                if not replica_lost(exc):
                    raise
                if attempt >= self.config.step_retries:
                    raise self._unavailable(step) from None
                attempt += 1
                logger.warning(
                    "%s replica lost (%s); retry %d", step, type(exc).__name__, attempt
                )
                if retry_until is None:
                    retry_until = time.monotonic() + self.config.step_retry_timeout_s

    async def _once(self, method: Any, args: tuple[Any, ...], left: float) -> Any:
        if left <= 0:
            raise _Expired
        response = method.remote(*args, self.carrier())
        try:
            return await _within(left, lambda: response)
        except _Expired:
            response.cancel()
            raise

    def _unavailable(self, step: str) -> APIError:
        return APIError(
            503,
            f"The {step} step lost its replica and no replacement answered within "
            f"{self.config.step_retry_timeout_s:g} s; retry after the indicated "
            "delay.",
            code="replica_unavailable",
            retry_after=self.config.retry_after_s,
        )


async def guard_stream(
    response: Any, config: ResilienceConfig
) -> AsyncGenerator[Any, None]:
    """Iterate a generator handle's streaming response within the request's
    deadline; its first item within `generate_start_timeout_s`.

    A lost generator replica, or a first item that does not come in time, is
    a 503 with Retry-After; the deadline passing is a 504. The response is
    cancelled (the replica then aborts the request in the engine) whenever
    the stream is left before its end.
    """
    first = True
    finished = False
    try:
        while True:
            deadline = current_deadline()
            start = config.generate_start_timeout_s if first else None
            left, by_deadline = _bound(deadline, start)
            try:
                item = await _within(left, lambda: anext(response))
            except StopAsyncIteration:
                break
            except _Expired:
                if by_deadline and deadline is not None:
                    raise deadline.exceeded() from None
                raise _generator_unavailable(config, started=False) from None
            except Exception as exc:
                if is_overload(exc):
                    raise overloaded(exc) from None
                if replica_lost(exc):
                    raise _generator_unavailable(config, started=True) from None
                raise
            first = False
            yield item
        finished = True
    finally:
        if not finished:
            response.cancel()


def _generator_unavailable(config: ResilienceConfig, started: bool) -> APIError:
    if started:
        message = "The generator replica was lost during this request"
    else:
        message = (
            "No generator replica started this generation within "
            f"{config.generate_start_timeout_s:g} s"
        )
    return APIError(
        503,
        f"{message}; retry after the indicated delay.",
        code="generator_unavailable",
        retry_after=config.retry_after_s,
    )


async def name_missing(states: dict[str, str]) -> dict[str, str]:
    """Readiness states with a node that has no RUNNING replica at all
    (its node lost, its replacement not placed yet) named as missing."""
    if all(state == "ready" for state in states.values()):
        return states
    from ray import serve

    try:
        app = serve.get_replica_context().app_name
    except Exception:  # outside a replica
        return states
    running = await asyncio.to_thread(running_replicas, app)
    return {
        name: "missing: no running replica"
        if state != "ready" and running.get(name) == 0
        else state
        for name, state in states.items()
    }


def running_replicas(app_name: str | None) -> dict[str, int]:
    """RUNNING replicas per deployment of `app_name`, from Serve's status
    (blocking: call it in a thread); empty when Serve cannot say."""
    if app_name is None:
        return {}
    try:
        from ray import serve

        app = serve.status().applications.get(app_name)
    except Exception:
        logger.debug("serve.status() failed", exc_info=True)
        return {}
    if app is None:
        return {}
    return {
        name: int(
            sum(
                n
                for state, n in dep.replica_states.items()
                if str(getattr(state, "value", state)) == "RUNNING"
            )
        )
        for name, dep in app.deployments.items()
    }
