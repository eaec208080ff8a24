"""Leases that ingress replicas renew: a dead replica's leases freed within
the renew timeout, a restarted ledger taking up the leases and slots still
held, lost `finish`es caught, and admissions held back (no Ray)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tenants.fairshare import FairShare
from tenants.ledger import Ledger
from tenants.limits import RateLimiter
from tenants.records import Limits

ONE = Limits(max_concurrency=1)


def test_a_replica_that_stops_renewing_loses_its_leases() -> None:
    rl = RateLimiter(window_s=60, lease_timeout_s=600, renew_timeout_s=10)
    held = rl.admit("t", ONE, 0.0, holder="r1", lease="L1")
    assert held.lease == "L1"
    assert not rl.admit("t", ONE, 1.0, holder="r2").allowed  # at its 1
    rl.renew("r1", {"L1": "t"}, set(), 9.0)
    assert rl.expire_leases(18.0) == []  # renewed at 9: 9 s ago
    assert rl.expire_leases(19.5) == ["L1"]  # its replica died
    assert rl.admit("t", ONE, 19.6, holder="r2").allowed
    # a lease nobody renews keeps the old, long timeout
    rl.admit("u", ONE, 20.0, lease="L9")
    assert "L9" not in rl.expire_leases(500.0)
    assert rl.expire_leases(621.0) == ["L9"]


def test_a_fresh_limiter_takes_up_the_leases_a_replica_still_holds() -> None:
    rl = RateLimiter(window_s=60, renew_timeout_s=10)
    adopted, gone = rl.renew("r1", {"L1": "t", "L2": "t"}, set(), 5.0)
    assert sorted(adopted) == ["L1", "L2"] and gone == []
    assert rl.usage("t", 5.0)["active"] == 2
    assert not rl.admit("t", Limits(max_concurrency=2), 5.1).allowed
    assert rl.renew("r1", {"L1": "t", "L2": "t"}, set(), 6.0) == ([], [])
    rl.finish("L1")
    assert rl.admit("t", Limits(max_concurrency=2), 6.1).allowed


def test_renew_frees_what_the_holder_finished_and_keeps_what_it_asked_for() -> None:
    rl = RateLimiter(window_s=60)
    rl.admit("t", Limits(), 0.0, holder="r1", lease="done")
    rl.admit("t", Limits(), 0.0, holder="r1", lease="asked")  # no answer yet
    rl.admit("t", Limits(), 0.0, holder="r2", lease="other")
    adopted, gone = rl.renew("r1", {}, {"asked"}, 1.0)
    assert adopted == [] and gone == ["done"]  # its finish was lost
    assert rl.usage("t", 1.0)["active"] == 2  # r2's lease is r2's business
    assert rl.renew("r1", {}, set(), 2.0) == ([], ["asked"])  # refused after all


def test_fair_share_adopts_running_tickets_once() -> None:
    fs = FairShare(capacity=2)
    fs.adopt("a", 1.0, "a-0", 0)
    fs.adopt("a", 1.0, "a-0", 0)  # a second renewal changes nothing
    assert fs.running == 1 and fs.holds("a-0") and fs.priority("a-0") == 0
    assert fs.request("b", 1.0, "b-0") == ["b-0"]
    assert fs.request("c", 1.0, "c-0") == []  # both slots taken
    assert fs.done("a-0") == ["c-0"]
    assert not fs.holds("a-0")


async def test_a_restarted_ledger_gets_leases_and_slots_back() -> None:
    before = Ledger(slots=2)
    lease = (await before.admit("t", {"max_concurrency": 1}, "r1", "L1"))["lease"]
    assert (await before.acquire(lease, 1.0)).status == "ok"
    after = Ledger(slots=2)  # the ledger died: the replica renews to a new one
    assert after.stats()["running"] == 0
    held = {"L1": ("t", "held", 1.0, 0)}
    assert after.renew("r1", held, []) == {"adopted": 1, "freed": 0}
    assert after.stats()["running"] == 1
    refused = await after.admit("t", {"max_concurrency": 1}, "r2", "L2")
    assert not refused["allowed"] and refused["code"] == "rate_limit_exceeded"
    # the replica's release_slot was lost: the next renewal frees the slot
    assert after.renew("r1", {"L1": ("t", "none", 1.0, 0)}, [])["freed"] == 0
    assert after.stats()["running"] == 0
    after.finish("L1")
    assert (await after.admit("t", {"max_concurrency": 1}, "r2", "L3"))["allowed"]


async def test_a_slot_being_asked_for_is_left_alone() -> None:
    ledger = Ledger(slots=1)
    a = (await ledger.admit("a", {}, "r1", "A"))["lease"]
    b = (await ledger.admit("b", {}, "r1", "B"))["lease"]
    assert (await ledger.acquire(a, 1.0)).status == "ok"
    waiting = asyncio.ensure_future(ledger.acquire(b, 1.0))
    await asyncio.sleep(0)
    held = {"A": ("a", "held", 1.0, 0), "B": ("b", "asking", 1.0, 0)}
    assert ledger.renew("r1", held, []) == {"adopted": 0, "freed": 0}
    assert ledger.stats()["running"] == 1 and not waiting.done()
    ledger.release_slot(a)
    assert (await waiting).status == "ok"


async def test_held_back_admissions_wait_only_under_a_concurrency_limit() -> None:
    ledger = Ledger()
    ledger.hold_back(0.3)
    t0 = time.perf_counter()
    assert (await ledger.admit("free", {}))["allowed"]
    assert time.perf_counter() - t0 < 0.2  # no concurrency limit: no wait
    assert (await ledger.admit("capped", {"max_concurrency": 1}))["allowed"]
    assert time.perf_counter() - t0 >= 0.3


async def test_held_back_slots_wait_and_count_what_was_taken_up() -> None:
    ledger = Ledger(slots=1)
    ledger.hold_back(0.3)
    lease = (await ledger.admit("b", {}, "r2", "B"))["lease"]
    t0 = time.perf_counter()
    waiting = asyncio.ensure_future(ledger.acquire(lease, 1.0))
    # a replica renews a slot it held under the ledger that died
    ledger.renew("r1", {"A": ("a", "held", 1.0, 0)}, [])
    await asyncio.sleep(0.35)
    assert not waiting.done()  # the one slot is A's
    ledger.finish("A")
    assert (await waiting).status == "ok"
    assert time.perf_counter() - t0 >= 0.3


def test_the_renewal_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from load_tests import lease_renewal

    args = ["--replicas", "2", "--leases", "3", "--rounds", "2"]
    assert lease_renewal.main(args) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["replicas"] == 2 and row["restart_ms_median"] > 0
    with pytest.raises(SystemExit):
        lease_renewal.main(["--leases", "0"])


def test_a_holder_reports_each_lease_and_slot_as_it_stands() -> None:
    from tenants.leases import HeldLeases

    held = HeldLeases()
    assert not held
    a, b = held.ask(), held.ask()
    assert held and held.snapshot()[0] == {}
    assert sorted(held.snapshot()[1]) == sorted([a, b])  # both asked, unanswered
    held.answered(a, "t", granted=True)
    held.answered(b, "t", granted=False)  # refused: nothing held
    assert held.snapshot() == ({a: ("t", "none", 1.0, 0)}, [])
    held.asking_slot(a, 2.0)
    assert held.snapshot()[0][a] == ("t", "asking", 2.0, 0)
    held.slot_answered(a, granted=True, priority=3)
    assert held.snapshot()[0][a] == ("t", "held", 2.0, 3)
    held.slot_released(a)
    assert held.snapshot()[0][a][1] == "none"
    held.finished(a)
    held.slot_released(a)  # late calls for a finished lease change nothing
    assert not held and held.snapshot() == ({}, [])


async def test_a_restarted_ledger_takes_up_a_holders_snapshot() -> None:
    from tenants.leases import HeldLeases

    before, held = Ledger(slots=2), HeldLeases()
    lease = held.ask()
    decision = await before.admit("t", {"max_concurrency": 1}, held.holder, lease)
    held.answered(lease, "t", bool(decision["lease"]))
    held.asking_slot(lease, 1.0)
    slot = await before.acquire(lease, 1.0)
    held.slot_answered(lease, slot.status == "ok", slot.priority)
    after = Ledger(slots=2)
    assert after.renew(held.holder, *held.snapshot())["adopted"] == 1
    assert after.stats()["running"] == 1
    assert not (await after.admit("t", {"max_concurrency": 1}))["allowed"]
