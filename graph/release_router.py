"""The ingress's one job: route a request to a live release.

Knows the live releases (each with its own pipeline context, warm-up state
and recent outcomes), the traffic state that arrives as the ingress's Serve
user_config, and how a change is made (validated here, applied to every
ingress replica through Serve); the policy itself is `releases.traffic`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from graph.errors import APIError
from releases import traffic as policy
from releases.canary import CanaryPolicy, OutcomeWindow, judge
from releases.config import FaultInjection
from releases.errors import TrafficError
from releases.traffic import TrafficState
from telemetry.tracing import CURRENT_RELEASE

if TYPE_CHECKING:
    from graph.context import ServingContext

logger = logging.getLogger("ragserve.releases")

RELEASE_HEADER = "x-ragserve-release"
SESSION_HEADER = "x-session-id"
Apply = Callable[[TrafficState], Awaitable[None]]
#: (action, actor, state before, state after): the audit log's admin record.
OnChange = Callable[[str, str, dict[str, Any], dict[str, Any]], None]


@dataclass
class LiveRelease:
    """One release as this ingress replica serves it."""

    name: str
    id: str
    ctx: ServingContext
    fault: FaultInjection = field(default_factory=FaultInjection)
    state: str = "warming"
    window: OutcomeWindow = field(default_factory=lambda: OutcomeWindow(60.0))

    @property
    def fingerprint(self) -> str:
        return f"{self.name}@{self.id[:12]}"


@dataclass(frozen=True)
class Choice:
    release: LiveRelease
    shadow: LiveRelease | None
    how: str  # "pin", "sticky" or "random"


class ReleaseRouter:
    """Live releases, the traffic state, and the changes to it."""

    def __init__(
        self,
        releases: list[LiveRelease],
        state: TrafficState,
        canary: CanaryPolicy,
        apply: Apply | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.releases = {r.name: r for r in releases}
        self._on_change = on_change
        self.state = state
        self.canary = canary
        self._apply = apply
        self._lock = asyncio.Lock()
        #: How long the last change took to reach this replica through Serve.
        self.last_change_s: float | None = None
        for r in releases:
            r.window = OutcomeWindow(canary.window_s)

    def choose(self, request: Request, user: str | None = None) -> Choice:
        """The release that answers `request`, top-down:

        1. a pin header (`x-ragserve-release`) names a live release: that one;
        2. else a sticky key (`x-session-id`, else the body's `user`, else
           the tenant) hashes into the live weights; no key: a random bucket;
        3. a shadow release takes its share of the requests as a mirror.
        """
        pin = request.headers.get(RELEASE_HEADER)
        if pin:
            return Choice(self._pinned(pin), None, "pin")
        key = (
            request.headers.get(SESSION_HEADER)
            or user
            or getattr(request.state, "tenant_id", None)
        )
        bucket = policy.sticky_bucket(key) if key else random.randrange(policy.BUCKETS)
        weights = policy.effective_weights(self.state.weights, self.warm_states())
        chosen = self.releases[policy.choose(weights, bucket)]
        return Choice(chosen, self._shadow(chosen.name), "sticky" if key else "random")

    def _pinned(self, name: str) -> LiveRelease:
        if name not in self.releases:
            raise APIError(
                404,
                f"release {name!r} is not live here (live: "
                f"{', '.join(self.releases)}); see GET /v1/models",
                param=RELEASE_HEADER,
                code="release_not_found",
            )
        return self.releases[name]

    def _shadow(self, chosen: str) -> LiveRelease | None:
        for name, share in self.state.shadow.items():
            if name != chosen and random.random() * 100 < share:
                return self.releases[name]
        return None

    def warm_states(self) -> dict[str, str]:
        return {name: r.state for name, r in self.releases.items()}

    def record(
        self, name: str, ok: bool, latency_ms: float, ttft_ms: float | None
    ) -> None:
        release = self.releases.get(name)
        if release is not None:
            release.window.add(ok, latency_ms, ttft_ms)

    def describe(self) -> dict[str, Any]:
        """Weights, shadow shares, states and canary verdicts (traffic show)."""
        s = self.state
        return {
            "revision": s.revision,
            "last_change_s": self.last_change_s,
            "stable": s.stable,
            "history": s.history,
            "releases": [
                {
                    "name": r.name,
                    "id": r.id,
                    "fingerprint": r.fingerprint,
                    "weight": s.weights.get(r.name, 0),
                    "shadow": s.shadow.get(r.name, 0),
                    "state": r.state,
                    "reason": s.reasons.get(r.name),
                }
                for r in self.releases.values()
            ],
        }

    def reconfigure(self, config: dict[str, Any]) -> None:
        """A new user_config: adopt it (Serve validated nothing; we did, before
        applying it)."""
        state = TrafficState.model_validate(config)
        unknown = set(state.weights) - set(self.releases)
        if unknown:
            logger.error("traffic names releases not served here: %s", unknown)
            return
        self.state = state
        logger.info("traffic revision %d: %s", state.revision, state.weights)

    async def change(
        self,
        make: Callable[[TrafficState], TrafficState],
        action: str = "traffic.set",
        actor: str = "admin-api",
    ) -> None:
        """Compute a new state from the live one, apply it to every replica and
        write it to the audit log.

        Raises:
            APIError: 400 with the rule it breaks; nothing changes then.
        """
        async with self._lock:
            try:
                new = make(self.state)
            except TrafficError as exc:
                raise APIError(400, str(exc), code="invalid_traffic") from None
            before = self.state
            started = time.perf_counter()
            if self._apply is None:
                self.state = new
            else:
                await self._apply(new)
                deadline = time.monotonic() + 30
                while (
                    self.state.revision < new.revision and time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.02)
                if self.state.revision < new.revision:
                    raise APIError(503, "the new weights did not arrive within 30 s")
            self.last_change_s = time.perf_counter() - started
            if self._on_change is not None:
                self._on_change(
                    action,
                    actor,
                    before.model_dump(mode="json"),
                    new.model_dump(mode="json"),
                )

    async def judge_forever(self) -> None:
        """Every `canary.interval_s`: take the weight of a breaching canary."""
        while True:
            await asyncio.sleep(self.canary.interval_s)
            try:
                await self.judge_once()
            except Exception:
                logger.exception("canary judgement failed")

    async def judge_once(self) -> None:
        s = self.state
        if not s.stable or s.stable not in self.releases:
            return
        stable = self.releases[s.stable].window.stats()
        for name, weight in s.weights.items():
            if name == s.stable or weight <= 0:
                continue
            reason = judge(self.canary, stable, self.releases[name].window.stats())
            if reason is None:
                continue
            logger.warning("canary %s loses its weight: %s", name, reason)
            await self.change(
                _taking_weight(name, reason), "release.auto_rollback", "canary-judge"
            )


def _taking_weight(name: str, reason: str) -> Callable[[TrafficState], TrafficState]:
    return lambda state: policy.take_weight_away(state, name, reason)


def select(ctx: ServingContext, request: Request, user: str | None = None) -> Any:
    """The serving context of the release that answers `request` (`ctx` itself
    when it routes no releases); the choice is kept on `request.state`."""
    if ctx.router is None:
        return ctx
    choice = ctx.router.choose(request, user)
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
