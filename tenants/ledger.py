"""The ledger every ingress replica shares: limits (`RateLimiter`) and fair
share (`FairShare`) behind async methods. Plain asyncio, no Ray: the graph
hosts one instance in a named Ray actor (`graph/gate/ledger_actor.py`); unit tests
and single-process servers use it directly.

A request's life: `admit` (a lease or a refusal) -> `acquire` (waits for a
generation slot while the generator is saturated) -> `charge` (tokens as they
stream; the last call reconciles to the final usage) -> `finish`.

Given a tenant database (`usage_db`), the ledger writes today's token counts
and each tenant's rate window there every `flush_s` while they change and
reads them back when it starts, so a restarted ledger keeps each daily quota
and this minute's rpm and tpm counts (losing at most the last `flush_s` of
them). Concurrency and slots come back from the replicas instead: each one
`renew`s the leases it holds every second or so, which also frees the leases
of a replica that died within `renew_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any, NamedTuple

from tenants.fairshare import FairShare
from tenants.leases import Snapshot
from tenants.limits import Decision, RateLimiter, utc_day
from tenants.records import Limits
from tenants.usage import DailyUsage

logger = logging.getLogger(__name__)


class Slot(NamedTuple):
    """`acquire`'s answer: "ok", "full" (the queue holds `max_queued` already:
    the caller answers 503) or "gone" (an unknown lease, or one finished while
    it waited); and the request's engine priority (lower goes first: its rank
    among its tenant's running requests, `FairShare.priority`)."""

    status: str
    priority: int = 0


class Ledger:
    """Counters and the fair-share queue for all tenants."""

    def __init__(
        self,
        window_s: float = 60.0,
        lease_timeout_s: float = 600.0,
        slots: int = 8,
        reserved_slots: int = 0,
        max_queued: int = -1,
        prompt_token_weight: float = 1.0,
        completion_token_weight: float = 2.0,
        usage_db: str | None = None,
        usage_scope: str = "default",
        flush_s: float = 1.0,
        renew_timeout_s: float = 10.0,
    ) -> None:
        self._limits = RateLimiter(window_s, lease_timeout_s, renew_timeout_s)
        self._held_back_until = 0.0
        self._usage = DailyUsage(usage_db, usage_scope) if usage_db else None
        if self._usage is not None:
            now = time.time()
            day = utc_day(now)
            self._limits.restore_day(day, self._usage.load(day), now)
            self._limits.restore_windows(self._usage.load_windows(), now)
        self._flush_s = flush_s
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None
        self._fair = FairShare(slots, reserved_slots)
        self._max_queued = max_queued
        self._weights = (prompt_token_weight, completion_token_weight)
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._tenant_of: dict[str, str] = {}

    def hold_back(self, seconds: float) -> None:
        """Admit nobody under a concurrency limit, and give out no slot, for
        `seconds` (a restarted ledger, until every replica has renewed the
        leases it holds)."""
        self._held_back_until = time.time() + seconds

    async def admit(
        self,
        tenant: str,
        limits: dict[str, Any],
        holder: str | None = None,
        lease: str | None = None,
    ) -> dict[str, Any]:
        """A lease for one request of `tenant`, or why not (a `Decision` as a
        dict, so it crosses process boundaries as plain data). A `holder`
        names the lease and `renew`s it while its request runs."""
        if self._usage is not None and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        wait = self._held_back_until - time.time()
        if wait > 0 and limits.get("max_concurrency") is not None:
            await asyncio.sleep(wait)
        now = time.time()
        self._expire(now)
        decision: Decision = self._limits.admit(
            tenant, Limits(**limits), now, holder, lease
        )
        if decision.lease:
            self._tenant_of[decision.lease] = tenant
            self._dirty = True
        return asdict(decision)

    async def acquire(self, lease: str, weight: float) -> Slot:
        """Wait for a generation slot (fair share by VTC); a restarted
        ledger first waits out its hold-back, so the slots still in use are
        taken up before any is handed out."""
        wait = self._held_back_until - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        tenant = self._tenant_of.get(lease)
        if tenant is None:
            return Slot("gone")
        queued = sum(self._fair.queued().values())
        busy = self._fair.running >= self._fair.capacity
        if busy and 0 <= self._max_queued <= queued:
            return Slot("full")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[lease] = future
        self._wake(self._fair.request(tenant, weight, lease))
        try:
            await future
        except asyncio.CancelledError:
            self._release_slot(lease)
            raise
        if lease not in self._tenant_of:
            return Slot("gone")
        return Slot("ok", self._fair.priority(lease))

    def renew(self, holder: str, held: Snapshot, pending: list[str]) -> dict[str, int]:
        """`holder` (an ingress replica) holds exactly `held` (lease ->
        tenant, slot, weight, engine priority: `tenants.leases.Snapshot`) and
        waits for answers on `pending`. Leases this ledger does not know are
        taken up with their slots (it restarted); the holder's leases in
        neither are finished, and slots it no longer holds are freed (their
        `finish` or `release_slot` was lost)."""
        now = time.time()
        self._expire(now)
        tenants = {lid: entry[0] for lid, entry in held.items()}
        adopted, gone = self._limits.renew(holder, tenants, set(pending), now)
        for lid in gone:
            self.finish(lid)
        for lid, (tenant, slot, weight, priority) in held.items():
            self._tenant_of.setdefault(lid, tenant)
            if slot == "held":
                self._fair.adopt(tenant, weight, lid, priority)
            elif slot == "none" and lid not in self._waiting and self._fair.holds(lid):
                self._release_slot(lid)
        if adopted or gone:
            logger.info(
                "replica %s: took up %d leases, freed %d whose finish was lost",
                holder[:8],
                len(adopted),
                len(gone),
            )
        return {"adopted": len(adopted), "freed": len(gone)}

    def charge(self, lease: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count tokens for the lease (negative values reconcile downwards)."""
        tenant = self._limits.charge(
            lease, prompt_tokens + completion_tokens, time.time()
        )
        if tenant is not None:
            self._dirty = True
            wp, wc = self._weights
            self._fair.charge(tenant, wp * prompt_tokens + wc * completion_tokens)

    def release_slot(self, lease: str) -> None:
        """Generation is over (the HTTP answer may still be sending)."""
        self._release_slot(lease)

    def finish(self, lease: str) -> None:
        """The request is over: its concurrency lease and slot are free."""
        self._limits.finish(lease)
        self._tenant_of.pop(lease, None)
        self._release_slot(lease)

    def _expire(self, now: float) -> None:
        """Free the leases of replicas that died (`RateLimiter.expire_leases`)."""
        expired = self._limits.expire_leases(now)
        for lease in expired:
            self._tenant_of.pop(lease, None)
            self._release_slot(lease)
        if expired:
            logger.warning("freed %d leases no live replica renews", len(expired))

    def _release_slot(self, lease: str) -> None:
        future = self._waiting.pop(lease, None)
        if future is not None and not future.done():
            future.set_result(None)  # a waiter whose request went away
        self._wake(self._fair.done(lease))

    def _wake(self, granted: list[str]) -> None:
        for lease in granted:
            future = self._waiting.pop(lease, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def _flush_loop(self) -> None:
        """Write today's counts and the windows while they change (a failed
        write is retried)."""
        assert self._usage is not None
        while True:
            await asyncio.sleep(self._flush_s)
            if not self._dirty:
                continue
            self._dirty = False
            # the snapshot on the loop, where the counts change; the write off it
            now = time.time()
            day, counts = self._limits.day_tokens(now)
            windows = self._limits.windows(now)
            try:
                await asyncio.to_thread(self._usage.save, day, counts, windows)
            except Exception:
                self._dirty = True
                logger.exception("could not save daily token counts and windows")

    def stats(self) -> dict[str, Any]:
        """Fair-share counters and queues, slots in use (tests, debugging)."""
        return {
            "counters": self._fair.counters(),
            "queued": self._fair.queued(),
            "running": self._fair.running,
            "slots": self._fair.capacity,
            "reserved_slots": self._fair.reserved,
        }

    def usage(self, tenant: str) -> dict[str, int]:
        now = time.time()
        self._expire(now)
        return self._limits.usage(tenant, now)
