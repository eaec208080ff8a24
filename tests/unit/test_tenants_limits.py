"""Sliding-window limits and VTC fair share as plain bookkeeping (no Ray)."""

from __future__ import annotations

import pytest

from tenants.fairshare import FairShare
from tenants.limits import RateLimiter, duration
from tenants.records import Limits


def test_rpm_is_exact_in_any_window() -> None:
    rl = RateLimiter(window_s=60)
    limits = Limits(rpm=60)
    admitted = []
    t = 1000.0
    for _ in range(600):  # 5 requests/s for two minutes
        d = rl.admit("a", limits, t)
        if d.allowed:
            admitted.append(t)
            rl.finish(d.lease or "")
        else:
            assert d.code == "rate_limit_exceeded" and d.retry_after_s > 0
            assert d.headers["x-ratelimit-remaining-requests"] == "0"
        t += 0.2
    assert len(admitted) == 120
    for start in admitted:
        assert sum(1 for x in admitted if start <= x < start + 60) <= 60


def test_tpm_with_streaming_charges_and_headers() -> None:
    rl = RateLimiter(window_s=60)
    limits = Limits(tpm=100)
    d = rl.admit("a", limits, 0.0)
    assert d.allowed and d.headers["x-ratelimit-remaining-tokens"] == "100"
    for _ in range(6):
        rl.charge(d.lease or "", 20, 1.0)  # completion tokens as they stream
    rl.finish(d.lease or "")
    refused = rl.admit("a", limits, 2.0)
    assert not refused.allowed and refused.code == "rate_limit_exceeded"
    assert refused.retry_after_s == 59.0
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-reset-tokens"] == "59s"
    assert rl.admit("a", limits, 61.5).allowed
    assert rl.admit("b", limits, 2.0).allowed  # tenants are separate


def test_concurrency_leases_and_expiry() -> None:
    rl = RateLimiter(window_s=60, lease_timeout_s=30)
    limits = Limits(max_concurrency=2)
    a, b = rl.admit("a", limits, 0), rl.admit("a", limits, 0)
    assert a.allowed and b.allowed
    assert not rl.admit("a", limits, 1).allowed
    rl.finish(a.lease or "")
    c = rl.admit("a", limits, 2)
    assert c.allowed
    assert not rl.admit("a", limits, 3).allowed
    # b and c never come back (their replica died): freed after the timeout
    assert rl.admit("a", limits, 40).allowed


def test_daily_quota_is_insufficient_quota() -> None:
    rl = RateLimiter()
    limits = Limits(daily_tokens=50)
    day = 1764547200.0  # 2025-12-01 00:00 UTC
    d = rl.admit("a", limits, day + 10)
    rl.charge(d.lease or "", 50, day + 11)
    rl.finish(d.lease or "")
    refused = rl.admit("a", limits, day + 3600)
    assert not refused.allowed and refused.code == "insufficient_quota"
    assert round(refused.retry_after_s) == 23 * 3600
    assert rl.admit("a", limits, day + 86400 + 1).allowed


def test_duration_format() -> None:
    assert duration(0.12) == "120ms"
    assert duration(1.0) == "1s"
    assert duration(360) == "6m0s"
    assert duration(3723) == "1h2m3s"


def _serve(fs: FairShare, granted: list[str], costs: dict[str, float]) -> str:
    ticket = granted.pop(0)
    tenant = ticket.split("-")[0]
    fs.charge(tenant, costs[tenant])
    granted.extend(fs.done(ticket))
    return tenant


def test_vtc_shares_by_weight_when_backlogged() -> None:
    fs = FairShare(capacity=1)
    granted: list[str] = []
    for i in range(40):
        granted += fs.request("a", 1.0, f"a-{i}")
    for i in range(40):
        granted += fs.request("b", 3.0, f"b-{i}")
    served = [_serve(fs, granted, {"a": 10, "b": 10}) for _ in range(40)]
    # weight 3 gets three times the service of weight 1 while both wait
    assert 27 <= served.count("b") <= 31


def test_vtc_idle_tenant_earns_no_credit_and_is_work_conserving() -> None:
    fs = FairShare(capacity=2)
    granted: list[str] = []
    for i in range(20):
        granted += fs.request("a", 1.0, f"a-{i}")
    assert granted == ["a-0", "a-1"]  # alone, a gets every slot
    for _ in range(10):
        _serve(fs, granted, {"a": 100, "b": 100})
    assert fs.counters()["a"] >= 1000
    # b arrives after idling: lifted to a's counter, not to zero
    granted += fs.request("b", 1.0, "b-0")
    assert fs.counters()["b"] == fs.counters()["a"]
    for i in range(1, 10):
        granted += fs.request("b", 1.0, f"b-{i}")
    served = [_serve(fs, granted, {"a": 100, "b": 100}) for _ in range(10)]
    assert 4 <= served.count("b") <= 6  # equal shares, no burst for b


def test_vtc_cancel_while_queued_frees_nothing_twice() -> None:
    fs = FairShare(capacity=1)
    assert fs.request("a", 1.0, "a-0") == ["a-0"]
    assert fs.request("b", 1.0, "b-0") == []
    assert fs.request("b", 1.0, "b-1") == []
    assert fs.done("b-0") == []  # gave up while queued
    assert fs.done("a-0") == ["b-1"]
    assert fs.done("a-0") == []
    assert fs.running == 1


def test_reserved_slot_goes_to_a_newcomer_at_once() -> None:
    fs = FairShare(capacity=4, reserved=1)
    granted: list[str] = []
    for i in range(16):
        granted += fs.request("a", 1.0, f"a-{i}")
    assert granted == ["a-0", "a-1", "a-2"]  # alone: all but the reserved slot
    assert fs.request("b", 1.0, "b-0") == ["b-0"]  # no wait for a's generations
    assert fs.request("b", 1.0, "b-1") == []  # b now runs something: it queues
    fs.charge("a", 300)
    assert fs.done("a-0") == []  # one slot stays free for a newcomer
    assert fs.done("a-1") == ["b-1"]  # the least-served tenant next
    assert fs.done("b-0") == ["a-3"]
    assert fs.running == 3
    with pytest.raises(ValueError, match="fewer than the 2 slots"):
        FairShare(capacity=2, reserved=2)


async def test_ledger_slot_carries_the_rank_as_engine_priority() -> None:
    from tenants.ledger import Ledger

    ledger = Ledger(slots=8, reserved_slots=1)
    a = [(await ledger.admit("a", {}))["lease"] for _ in range(3)]
    ranks = [(await ledger.acquire(lease, 1.0)).priority for lease in a]
    assert ranks == [0, 1, 2]  # a's n-th running request ranks n
    b = (await ledger.admit("b", {}))["lease"]
    assert await ledger.acquire(b, 1.0) == ("ok", 0)  # b's first goes first
    heavy = [(await ledger.admit("h", {}))["lease"] for _ in range(2)]
    assert [(await ledger.acquire(x, 2.0)).priority for x in heavy] == [0, 0]
    ledger.finish(a[0])
    a4 = (await ledger.admit("a", {}))["lease"]
    assert (await ledger.acquire(a4, 1.0)).priority == 2  # two of a's still run


async def test_ledger_queues_fairly_and_refuses_past_max_queued() -> None:
    import asyncio

    from tenants.ledger import Ledger

    ledger = Ledger(slots=1, max_queued=1)
    unlimited: dict = {}
    a1 = (await ledger.admit("a", unlimited))["lease"]
    a2 = (await ledger.admit("a", unlimited))["lease"]
    b1 = (await ledger.admit("b", unlimited))["lease"]
    assert (await ledger.acquire(a1, 1.0)).status == "ok"
    ledger.charge(a1, 100, 50)  # a has been served a lot
    waiting = asyncio.ensure_future(ledger.acquire(b1, 1.0))
    await asyncio.sleep(0)
    assert (await ledger.acquire(a2, 1.0)).status == "full"  # one already queued
    assert not waiting.done()
    ledger.release_slot(a1)
    slot = await waiting
    assert slot == ("ok", 0)  # b's first running request
    assert ledger.stats()["running"] == 1
    ledger.finish(b1)
    assert ledger.stats()["running"] == 0
