"""Which release answers a request: the live releases and their weights.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import Request

from graph.errors import APIError
from releases import traffic as policy
from releases.canary import CanaryPolicy, OutcomeWindow, judge
from releases.config import FaultInjection
from releases.errors import TrafficConflictError, TrafficError
from releases.traffic import TrafficState

logger = logging.getLogger("ragserve.releases")

RELEASE_HEADER = "x-ragserve-release"
SESSION_HEADER = "x-session-id"
#: What each release is served from (the API's serving context); the router
#: hands it back with the choice and never looks inside it.
C = TypeVar("C")
Apply = Callable[[TrafficState], Awaitable[None]]
#: (action, actor, state before, state after): the audit log's admin record.
OnChange = Callable[[str, str, dict[str, Any], dict[str, Any]], None]


@dataclass
class LiveRelease(Generic[C]):
    """One release as this ingress replica serves it."""

    name: str
    id: str
    ctx: C
    fault: FaultInjection = field(default_factory=FaultInjection)
    #: The Serve deployments this release's requests go through.
    deployments: frozenset[str] = frozenset()
    state: str = "warming"
    window: OutcomeWindow = field(default_factory=lambda: OutcomeWindow(60.0))

    @property
    def fingerprint(self) -> str:
        return f"{self.name}@{self.id[:12]}"


@dataclass(frozen=True)
class Choice(Generic[C]):
    release: LiveRelease[C]
    shadow: LiveRelease[C] | None
    how: str  # "pin", "sticky" or "random"


class ReleaseRouter(Generic[C]):
    """Live releases, the traffic state, and the changes to it."""

    def __init__(
        self,
        releases: list[LiveRelease[C]],
        state: TrafficState,
        canary: CanaryPolicy,
        apply: Apply | None = None,
        on_change: OnChange | None = None,
        grace_s: float = 300.0,
    ) -> None:
        self.releases = {r.name: r for r in releases}
        #: How long a release that lost its traffic stays deployed.
        self.grace_s = grace_s
        self._on_change = on_change
        self.state = state
        self.canary = canary
        self._apply = apply
        self._lock = asyncio.Lock()
        #: How long the last change took to reach this replica through Serve.
        self.last_change_s: float | None = None
        for r in releases:
            r.window = OutcomeWindow(canary.window_s)

    def choose(
        self,
        request: Request,
        user: str | None = None,
        tenant: str | None = None,
        allowed: tuple[str, ...] | None = None,
    ) -> Choice[C]:
        """The release that answers `request`, top-down:

        1. a pin header (`x-ragserve-release`) names a live release: that one
           (the tenant gate has refused a pin outside `allowed`);
        2. else a sticky key (`x-session-id`, else the body's `user`, else
           the tenant) hashes into the live weights, of the `allowed`
           releases only when the tenant is held to some; no key: a random
           bucket;
        3. a shadow release (one the tenant may use) takes its share of the
           requests as a mirror.
        """
        pin = request.headers.get(RELEASE_HEADER)
        if pin:
            return Choice(self._pinned(pin), None, "pin")
        key = request.headers.get(SESSION_HEADER) or user or tenant
        bucket = policy.sticky_bucket(key) if key else random.randrange(policy.BUCKETS)
        weights = policy.effective_weights(self.state.weights, self.warm_states())
        if allowed is not None:
            weights = self._allowed(weights, allowed)
        chosen = self.releases[policy.choose(weights, bucket)]
        shadow = self._shadow(chosen.name)
        if shadow is not None and allowed is not None and shadow.name not in allowed:
            shadow = None
        return Choice(chosen, shadow, "sticky" if key else "random")

    def _allowed(
        self, weights: dict[str, int], allowed: tuple[str, ...]
    ) -> dict[str, int]:
        live = [
            n
            for n in sorted(allowed)
            if n in self.releases and self.releases[n].state != "retired"
        ]
        usable = [n for n in live if self.releases[n].state == "warm"] or live
        mine = policy.within(weights, allowed, usable)
        if not mine:
            raise APIError(
                404,
                f"none of the releases this key may use ({', '.join(allowed)}) "
                "is live here; see GET /v1/models",
                code="release_not_found",
            )
        return mine

    def _pinned(self, name: str) -> LiveRelease[C]:
        if name not in self.releases:
            raise APIError(
                404,
                f"release {name!r} is not live here (live: "
                f"{', '.join(self.releases)}); see GET /v1/models",
                param=RELEASE_HEADER,
                code="release_not_found",
            )
        if self.releases[name].state == "retired":
            raise APIError(
                409,
                f"release {name!r} is retired (its own deployments were scaled "
                f"to zero after its grace period); `ragserve release restore "
                f"{name}` brings it back",
                param=RELEASE_HEADER,
                code="release_retired",
            )
        return self.releases[name]

    def _shadow(self, chosen: str) -> LiveRelease[C] | None:
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
                    "retires_at": self._retires_at(r.name),
                }
                for r in self.releases.values()
            ],
        }

    def _retires_at(self, name: str) -> float | None:
        since = self.state.idle_since.get(name)
        return None if since is None else since + self.grace_s

    def parked(self, state: TrafficState) -> set[str]:
        """Deployments only retired releases use: scaled to zero under `state`."""
        retired = [r for n, r in self.releases.items() if n in state.retired]
        kept = [r for n, r in self.releases.items() if n not in state.retired]
        used = {d for r in kept for d in r.deployments}
        return {d for r in retired for d in r.deployments} - used

    def reconfigure(self, config: dict[str, Any]) -> list[LiveRelease[C]]:
        """A new user_config: adopt it (Serve validated nothing; we did, before
        applying it).

        Returns:
            The releases it brings back from retirement: they warm up again.
        """
        state = TrafficState.model_validate(config)
        unknown = set(state.weights) - set(self.releases)
        if unknown:
            logger.error("traffic names releases not served here: %s", unknown)
            return []
        self.state = state
        restored = []
        for name, release in self.releases.items():
            if name in state.retired:
                release.state = "retired"
            elif release.state == "retired":
                release.state = "warming"
                restored.append(release)
        logger.info("traffic revision %d: %s", state.revision, state.weights)
        return restored

    async def change(
        self,
        make: Callable[[TrafficState], TrafficState],
        action: str = "traffic.set",
        actor: str = "admin-api",
    ) -> None:
        """Compute a new state from the live one, apply it to every replica and
        write it to the audit log.

        Raises:
            APIError: 400 with the rule it breaks, 409 when the live state
                cannot take it now; nothing changes then.
        """
        async with self._lock:
            try:
                new = make(self.state)
            except TrafficConflictError as exc:
                raise APIError(409, str(exc), code="traffic_conflict") from None
            except TrafficError as exc:
                raise APIError(400, str(exc), code="invalid_traffic") from None
            before = self.state
            if new == before:
                return  # nothing to change (another replica got there first)
            new = policy.stamp_idle(before, new, time.time())
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
        """Every `canary.interval_s`: take the weight of a breaching canary,
        retire a release whose grace period is over."""
        while True:
            await asyncio.sleep(self.canary.interval_s)
            try:
                await self.judge_once()
                await self.retire_due()
            except Exception:
                logger.exception("canary judgement or retirement failed")

    async def retire_due(self) -> None:
        """Retire each release idle for `grace_s`: the deployments only it uses
        scale to zero (in the same Serve update that carries the new state)."""
        for name in policy.due_for_retirement(self.state, self.grace_s, time.time()):
            logger.info("release %s retires: idle for %.0f s", name, self.grace_s)
            await self.change(_retiring(name), "release.retire", "grace-period")

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


def _retiring(name: str) -> Callable[[TrafficState], TrafficState]:
    def make(state: TrafficState) -> TrafficState:
        # Another ingress replica may have retired it first: nothing to do.
        return state if name in state.retired else policy.retire(state, name)

    return make
