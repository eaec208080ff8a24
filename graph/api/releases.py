"""A request's life around its release: the choice kept on the request, the
shadow mirror, the release named on the response and its outcome recorded
(for the canary judge and the `release`-labelled series)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request

from graph.gate.admission import current_admission
from graph.gate.tenancy import OPERATORS
from graph.routing.router import RELEASE_HEADER, LiveRelease, ReleaseRouter
from telemetry.tracing import CURRENT_RELEASE

if TYPE_CHECKING:
    from graph.api.context import ServingContext

logger = logging.getLogger("ragserve.releases")


def select(ctx: ServingContext, request: Request, user: str | None = None) -> Any:
    """The serving context of the release that answers `request` (`ctx` itself
    when it routes no releases); the choice is kept on `request.state`."""
    if ctx.router is None:
        return ctx
    adm = current_admission()
    tenant = allowed = None
    if adm is not None and adm.principal.name not in OPERATORS:
        tenant, allowed = adm.principal.name, adm.principal.releases
    choice = ctx.router.choose(request, user, tenant, allowed)
    request.state.release = choice.release
    request.state.shadow = choice.shadow
    CURRENT_RELEASE.set(choice.release.name)  # carried to the step deployments
    return choice.release.ctx


def fingerprint(request: Request) -> str | None:
    release = getattr(request.state, "release", None)
    return release.fingerprint if release is not None else None


def mark_first_token(request: Request) -> None:
    request.state.ttft_at = time.perf_counter()


_SHADOWS: set[asyncio.Task[None]] = set()


def mirror(
    ctx: ServingContext,
    request: Request,
    run: Callable[[ServingContext], Awaitable[AsyncIterator[Any]]],
) -> None:
    """Send the same request to the chosen shadow release in the background;
    its answer is discarded, its latency, errors and trace are recorded."""
    shadow: LiveRelease | None = getattr(request.state, "shadow", None)
    if shadow is None or ctx.router is None:
        return
    task = asyncio.create_task(_shadow(ctx.router, shadow, request.url.path, run))
    _SHADOWS.add(task)
    task.add_done_callback(_SHADOWS.discard)


async def _shadow(
    router: ReleaseRouter,
    shadow: LiveRelease,
    route: str,
    run: Callable[[ServingContext], Awaitable[AsyncIterator[Any]]],
) -> None:
    from telemetry.metrics import metrics
    from telemetry.tracing import tracer

    CURRENT_RELEASE.set(shadow.name)  # this task's own copy of the context
    started = time.perf_counter()
    ttft_ms: float | None = None
    status = 200
    attrs: dict[str, str | bool] = {"release": shadow.name, "release.shadow": True}
    with tracer().start_as_current_span("rag.shadow", attributes=attrs) as span:
        try:
            async for _ in await run(shadow.ctx):
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1000
        except Exception as exc:
            status = getattr(exc, "status_code", 500)
            span.set_attribute("error.type", type(exc).__name__)
            logger.info("shadow %s failed: %s", shadow.name, exc)
    latency_ms = (time.perf_counter() - started) * 1000
    router.record(shadow.name, status < 500, latency_ms, ttft_ms)
    metrics().request(shadow.name, route, status, latency_ms, ttft_ms, shadow=True)


def observe(request: Request, response: Any, span: Any, started: float) -> None:
    """Name the release on the response and the root span; record the outcome
    (for the canary judge and the `release`-labelled series) when the last
    byte is sent."""
    release: LiveRelease | None = getattr(request.state, "release", None)
    if release is None:
        return
    response.headers[RELEASE_HEADER] = release.name
    span.set_attribute("release", release.name)
    span.set_attribute("release.id", release.id)
    router: ReleaseRouter | None = request.app.state.ctx.router
    status = response.status_code

    def done() -> None:
        from telemetry.metrics import metrics

        now = time.perf_counter()
        ttft_at = getattr(request.state, "ttft_at", None)
        ttft_ms = (ttft_at - started) * 1000 if ttft_at else None
        latency_ms = (now - started) * 1000
        if router is not None:
            router.record(release.name, status < 500, latency_ms, ttft_ms)
        metrics().request(release.name, request.url.path, status, latency_ms, ttft_ms)

    body = getattr(response, "body_iterator", None)
    if body is None:
        done()
    else:
        response.body_iterator = _then(body, done)


async def _then(
    body: AsyncIterator[Any], done: Callable[[], None]
) -> AsyncIterator[Any]:
    try:
        async for part in body:
            yield part
    finally:
        done()
