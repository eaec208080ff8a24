"""The canary judge: a release's own recent requests against the stable one's.

Knows the policy (minimum requests, window, error-rate difference, p95 ratios
of time to first token and end-to-end latency) and sliding windows of request
outcomes; knows nothing of where the outcomes come from.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class CanaryPolicy(BaseModel):
    """When a canary loses its weight by itself."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Judge canaries at all.")
    min_requests: int = Field(
        20, ge=1, description="Canary requests in the window before judging."
    )
    window_s: float = Field(60.0, gt=0, description="Sliding window, seconds.")
    max_error_rate_diff: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Canary error rate may exceed the stable one's by this much.",
    )
    max_ttft_p95_ratio: float = Field(
        2.0, gt=0, description="Canary p95 time to first token / stable p95."
    )
    max_latency_p95_ratio: float = Field(
        2.0, gt=0, description="Canary p95 end-to-end latency / stable p95."
    )
    interval_s: float = Field(1.0, gt=0, description="How often the judge runs.")


@dataclass(frozen=True)
class Outcome:
    at: float
    ok: bool
    latency_ms: float
    ttft_ms: float | None


@dataclass(frozen=True)
class WindowStats:
    requests: int
    error_rate: float
    p95_latency_ms: float | None
    p95_ttft_ms: float | None


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class OutcomeWindow:
    """Request outcomes of one release over the last `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._items: deque[Outcome] = deque()

    def add(
        self,
        ok: bool,
        latency_ms: float,
        ttft_ms: float | None = None,
        at: float | None = None,
    ) -> None:
        self._items.append(
            Outcome(time.monotonic() if at is None else at, ok, latency_ms, ttft_ms)
        )

    def stats(self, now: float | None = None) -> WindowStats:
        now = time.monotonic() if now is None else now
        while self._items and self._items[0].at < now - self.window_s:
            self._items.popleft()
        items = list(self._items)
        n = len(items)
        errors = sum(1 for o in items if not o.ok)
        ok = [o for o in items if o.ok]
        return WindowStats(
            requests=n,
            error_rate=errors / n if n else 0.0,
            p95_latency_ms=p95([o.latency_ms for o in ok]),
            p95_ttft_ms=p95([o.ttft_ms for o in ok if o.ttft_ms is not None]),
        )


def judge(policy: CanaryPolicy, stable: WindowStats, canary: WindowStats) -> str | None:
    """The reason the canary breaches the policy, or None (also when there are
    too few canary requests to tell)."""
    if not policy.enabled or canary.requests < policy.min_requests:
        return None
    diff = canary.error_rate - stable.error_rate
    if diff > policy.max_error_rate_diff:
        return (
            f"error rate {canary.error_rate:.1%} vs stable {stable.error_rate:.1%} "
            f"(+{diff:.1%} > max_error_rate_diff {policy.max_error_rate_diff:.1%}) "
            f"over {canary.requests} requests"
        )
    for what, mine, theirs, limit in (
        (
            "p95 time to first token",
            canary.p95_ttft_ms,
            stable.p95_ttft_ms,
            policy.max_ttft_p95_ratio,
        ),
        (
            "p95 latency",
            canary.p95_latency_ms,
            stable.p95_latency_ms,
            policy.max_latency_p95_ratio,
        ),
    ):
        if mine is None or not theirs:
            continue
        if mine / theirs > limit:
            return (
                f"{what} {mine:.0f} ms vs stable {theirs:.0f} ms "
                f"(x{mine / theirs:.1f} > {limit:g}) over {canary.requests} requests"
            )
    return None
