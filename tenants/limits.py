"""Per-tenant limits as exact sliding windows: requests and tokens per window,
concurrent requests (leases) and a daily token quota. Pure bookkeeping over
numbers and clocks; one instance must serve every ingress replica (the graph
keeps it in one actor), which is what makes the limits exact, not N times.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tenants.records import Limits

#: One tenant's sliding window as plain data: request times, and (time,
#: tokens) charges (what `RateLimiter.windows` copies and a restart restores).
Window = tuple[list[float], list[tuple[float, int]]]


@dataclass
class Decision:
    """The answer to `admit`: a lease, or why not and when to retry."""

    allowed: bool
    lease: str | None = None
    code: str | None = None  # rate_limit_exceeded | insufficient_quota
    message: str = ""
    retry_after_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _TenantWindow:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    day: str = ""
    day_tokens: int = 0
    active: int = 0


@dataclass
class _Lease:
    tenant: str
    started: float
    tokens: int = 0
    holder: str | None = None  # the ingress replica that renews it, if any
    renewed: float = 0.0  # when its holder last said it still holds it


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`, `120ms`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = math.ceil(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    return f"{m}m{s}s" if m else f"{s}s"


def utc_day(now: float) -> str:
    """The UTC day of `now`, as YYYY-MM-DD (when daily quotas start over)."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _to_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0)
    return (day + timedelta(days=1)).timestamp() - now


class RateLimiter:
    """Sliding-window rpm/tpm, concurrency leases and daily quotas per tenant."""

    def __init__(
        self,
        window_s: float = 60.0,
        lease_timeout_s: float = 600.0,
        renew_timeout_s: float = 10.0,
    ) -> None:
        self.window_s = window_s
        self.lease_timeout_s = lease_timeout_s
        self.renew_timeout_s = renew_timeout_s
        self._tenants: dict[str, _TenantWindow] = {}
        self._leases: dict[str, _Lease] = {}

    def _window(self, tenant: str, now: float) -> _TenantWindow:
        w = self._tenants.setdefault(tenant, _TenantWindow())
        edge = now - self.window_s
        while w.requests and w.requests[0] <= edge:
            w.requests.popleft()
        while w.tokens and w.tokens[0][0] <= edge:
            w.token_sum -= w.tokens.popleft()[1]
        day = utc_day(now)
        if w.day != day:
            w.day, w.day_tokens = day, 0
        return w

    def expire_leases(self, now: float) -> list[str]:
        """Free the leases whose replica died: one with a holder that has not
        renewed it for `renew_timeout_s`, one without older than
        `lease_timeout_s`."""
        stale = [
            lid
            for lid, lease in self._leases.items()
            if (
                now - lease.renewed > self.renew_timeout_s
                if lease.holder is not None
                else now - lease.started > self.lease_timeout_s
            )
        ]
        for lid in stale:
            self.finish(lid)
        return stale

    def admit(
        self,
        tenant: str,
        limits: Limits,
        now: float,
        holder: str | None = None,
        lease: str | None = None,
    ) -> Decision:
        """Take one request of `tenant` now, or refuse it with a retry time.
        A `holder` (an ingress replica) names the lease itself and renews it
        (`renew`); without one, the lease lives up to `lease_timeout_s`."""
        self.expire_leases(now)
        w = self._window(tenant, now)
        refusal = self._refusal(w, limits, now)
        if refusal is None:
            w.requests.append(now)
            w.active += 1
            lease = lease or uuid.uuid4().hex
            self._leases[lease] = _Lease(tenant, now, holder=holder, renewed=now)
            decision = Decision(True, lease)
        else:
            decision = refusal
        decision.headers = self.headers(w, limits, now)
        return decision

    def _refusal(self, w: _TenantWindow, limits: Limits, now: float) -> Decision | None:
        if limits.daily_tokens is not None and w.day_tokens >= limits.daily_tokens:
            return Decision(
                False,
                code="insufficient_quota",
                message=f"Daily token quota of {limits.daily_tokens} is used up; "
                "it resets at 00:00 UTC.",
                retry_after_s=_to_midnight(now),
            )
        if limits.rpm is not None and len(w.requests) >= limits.rpm:
            return Decision(
                False,
                code="rate_limit_exceeded",
                message=f"Rate limit of {limits.rpm} requests per "
                f"{self.window_s:g} s reached.",
                retry_after_s=w.requests[0] + self.window_s - now,
            )
        if limits.tpm is not None and w.token_sum >= limits.tpm:
            return Decision(
                False,
                code="rate_limit_exceeded",
                message=f"Rate limit of {limits.tpm} tokens per "
                f"{self.window_s:g} s reached.",
                retry_after_s=self._tokens_free_in(w, limits.tpm, now),
            )
        if limits.max_concurrency is not None and w.active >= limits.max_concurrency:
            return Decision(
                False,
                code="rate_limit_exceeded",
                message=f"{limits.max_concurrency} concurrent requests are "
                "already running; retry when one finishes.",
                retry_after_s=1.0,
            )
        return None

    def _tokens_free_in(self, w: _TenantWindow, tpm: int, now: float) -> float:
        excess = w.token_sum - tpm + 1
        for when, n in w.tokens:
            excess -= n
            if excess <= 0:
                return when + self.window_s - now
        return self.window_s

    def headers(self, w: _TenantWindow, limits: Limits, now: float) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the limits this tenant has."""
        out: dict[str, str] = {}
        if limits.rpm is not None:
            reset = w.requests[0] + self.window_s - now if w.requests else 0.0
            out["x-ratelimit-limit-requests"] = str(limits.rpm)
            out["x-ratelimit-remaining-requests"] = str(
                max(0, limits.rpm - len(w.requests))
            )
            out["x-ratelimit-reset-requests"] = duration(reset)
        if limits.tpm is not None:
            reset = w.tokens[0][0] + self.window_s - now if w.tokens else 0.0
            out["x-ratelimit-limit-tokens"] = str(limits.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, limits.tpm - w.token_sum))
            out["x-ratelimit-reset-tokens"] = duration(reset)
        return out

    def charge(self, lease: str, tokens: int, now: float) -> str | None:
        """Count `tokens` more for the lease's tenant (negative: a refund when
        the final count is lower than what was counted while streaming).
        Returns the tenant, or None for an unknown (finished or expired) lease."""
        held = self._leases.get(lease)
        if held is None or tokens == 0:
            return held.tenant if held else None
        held.tokens += tokens
        w = self._window(held.tenant, now)
        w.tokens.append((now, tokens))
        w.token_sum += tokens
        w.day_tokens += tokens
        return held.tenant

    def finish(self, lease: str) -> _Lease | None:
        """Return the lease: its concurrency slot is free again."""
        held = self._leases.pop(lease, None)
        if held is not None:
            w = self._tenants.get(held.tenant)
            if w is not None:
                w.active = max(0, w.active - 1)
        return held

    def renew(
        self, holder: str, held: dict[str, str], pending: set[str], now: float
    ) -> tuple[list[str], list[str]]:
        """`holder` holds exactly the leases `held` (lease -> tenant), and has
        asked for `pending` without an answer yet. Its leases this limiter
        does not know are taken up (it restarted: they count against
        concurrency again); those it knows for `holder` in neither set are
        over (their `finish` was lost) and freed. Returns (taken up, freed)."""
        adopted = []
        for lid, tenant in held.items():
            lease = self._leases.get(lid)
            if lease is None:
                self._leases[lid] = _Lease(tenant, now, holder=holder, renewed=now)
                self._window(tenant, now).active += 1
                adopted.append(lid)
            else:
                lease.holder, lease.renewed = holder, now
        gone = [
            lid
            for lid, lease in self._leases.items()
            if lease.holder == holder and lid not in held and lid not in pending
        ]
        for lid in gone:
            self.finish(lid)
        return adopted, gone

    def day_tokens(self, now: float) -> tuple[str, dict[str, int]]:
        """Today (UTC) and each tenant's tokens counted today."""
        day = utc_day(now)
        counts = {
            name: w.day_tokens
            for name, w in self._tenants.items()
            if w.day == day and w.day_tokens > 0
        }
        return day, counts

    def restore_day(self, day: str, counts: dict[str, int], now: float) -> None:
        """Take up `day`'s counts (as saved by an earlier ledger) if it is today."""
        if day != utc_day(now):
            return
        for tenant, tokens in counts.items():
            w = self._window(tenant, now)
            w.day_tokens = max(w.day_tokens, tokens)

    def windows(self, now: float) -> dict[str, Window]:
        """Each tenant's window, copied as plain lists for a later
        `restore_windows` (cheap: the caller compacts them off the loop,
        `tenants.usage.compact`). Tenants with nothing in their window are
        left out."""
        out = {}
        for tenant in list(self._tenants):
            w = self._window(tenant, now)
            if w.requests or w.tokens:
                out[tenant] = (list(w.requests), list(w.tokens))
        return out

    def restore_windows(
        self,
        windows: dict[str, Window],
        now: float,
    ) -> None:
        """Take up windows saved by an earlier ledger: what is still inside
        the window counts again (against rpm and tpm)."""
        edge = now - self.window_s
        for tenant, (requests, charges) in windows.items():
            w = self._window(tenant, now)
            # a time ahead of this clock (another node's) counts as now
            kept = [min(t, now) for t in requests if t > edge]
            w.requests = deque(sorted([*w.requests, *kept]))
            more = [(min(t, now), n) for t, n in charges if t > edge]
            w.tokens = deque(sorted([*w.tokens, *more]))
            w.token_sum = sum(n for _, n in w.tokens)

    def usage(self, tenant: str, now: float) -> dict[str, int]:
        """Current counts (for tests and `/v1/...` headers)."""
        w = self._window(tenant, now)
        return {
            "requests": len(w.requests),
            "tokens": w.token_sum,
            "active": w.active,
            "day_tokens": w.day_tokens,
        }
