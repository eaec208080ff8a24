"""Daily token counts and rate windows in the tenant database (a real SQLite
file): saved by one ledger, read back by the next, so a restarted ledger keeps
each quota and this minute's rpm and tpm."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tenants.ledger import Ledger
from tenants.limits import RateLimiter, utc_day
from tenants.records import Limits, TenantError
from tenants.usage import DailyUsage, compact


def test_counts_are_saved_replaced_and_kept_apart_by_scope(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    a, b = DailyUsage(url, "ledger-a"), DailyUsage(url, "ledger-b")
    a.save("2026-12-01", {"t1": 10, "t2": 5})
    a.save("2026-12-01", {"t1": 12})  # replaced, t2 untouched
    a.save("2026-11-30", {"t1": 99})
    b.save("2026-12-01", {"t1": 1})
    assert a.load("2026-12-01") == {"t1": 12, "t2": 5}
    assert a.load("2026-11-30") == {"t1": 99}
    assert b.load("2026-12-01") == {"t1": 1}
    assert DailyUsage(url, "ledger-a").load("2026-12-02") == {}


def test_a_bad_url_is_a_one_line_error() -> None:
    with pytest.raises(TenantError, match="not a database URL"):
        DailyUsage("not a url", "x")


def test_only_todays_counts_are_taken_up() -> None:
    limiter = RateLimiter()
    now = time.time()
    limiter.restore_day("1999-01-01", {"t": 50}, now)
    assert limiter.usage("t", now)["day_tokens"] == 0
    limiter.restore_day(utc_day(now), {"t": 50}, now)
    assert limiter.usage("t", now)["day_tokens"] == 50
    assert limiter.day_tokens(now) == (utc_day(now), {"t": 50})
    decision = limiter.admit("t", Limits(daily_tokens=50), now)
    assert decision.lease is None and decision.code == "insufficient_quota"


async def test_a_new_ledger_keeps_the_daily_quota_of_the_one_before(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    first = Ledger(usage_db=url, usage_scope="app", flush_s=0.05)
    lease = (await first.admit("t", {"daily_tokens": 100}))["lease"]
    first.charge(lease, 60, 40)
    first.finish(lease)
    deadline = time.time() + 10
    while DailyUsage(url, "app").load(utc_day(time.time())) != {"t": 100}:
        assert time.time() < deadline, "counts never written"
        await asyncio.sleep(0.05)
    # the ledger's process dies; Ray starts a new one with the same arguments
    second = Ledger(usage_db=url, usage_scope="app")
    refused = await second.admit("t", {"daily_tokens": 100})
    assert refused["lease"] is None and refused["code"] == "insufficient_quota"
    other = Ledger(usage_db=url, usage_scope="another-app")
    assert (await other.admit("t", {"daily_tokens": 100}))["lease"]


def test_windows_round_trip_and_only_what_is_inside_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    now = time.time()
    first = RateLimiter(window_s=60)
    for ago in (70, 30, 5):  # the first is already outside the window
        first.admit("t", Limits(), now - ago)
    lease = first.admit("t", Limits(), now).lease
    assert lease
    for n in (3, 4, 5):  # three charges within one second: saved as one
        first.charge(lease, n, now)
    windows = first.windows(now)
    assert len(windows["t"][0]) == 3 and len(windows["t"][1]) == 3
    DailyUsage(url, "app").save(utc_day(now), {}, windows)
    DailyUsage(url, "app").save(utc_day(now), {}, first.windows(now))  # replaced
    saved = DailyUsage(url, "app").load_windows()
    assert saved["t"][1] == [(round(now, 3), 12)]  # stored summed by second
    assert saved == {"t": compact(windows["t"])}
    assert DailyUsage(url, "other").load_windows() == {}
    idle = RateLimiter(window_s=60)
    idle.admit("gone", Limits(), now - 61)
    assert idle.windows(now) == {}  # an empty window is not kept
    DailyUsage(url, "scratch").save(utc_day(now), {}, windows)
    DailyUsage(url, "scratch").save(utc_day(now), {}, idle.windows(now))
    assert DailyUsage(url, "scratch").load_windows() == {}  # nor left behind
    later = now + 40  # the request from 30 s ago has left the window by then
    second = RateLimiter(window_s=60)
    second.restore_windows(saved, later)
    assert second.usage("t", later) == {
        "requests": 2,
        "tokens": 12,
        "active": 0,
        "day_tokens": 0,
    }
    refused = second.admit("t", Limits(rpm=2), later)
    assert refused.code == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.retry_after_s == pytest.approx(15, abs=0.01)  # the 5 s one


async def test_a_new_ledger_keeps_the_rpm_and_tpm_of_the_one_before(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    first = Ledger(usage_db=url, usage_scope="app", flush_s=0.05)
    limits = {"rpm": 3, "tpm": 1000}
    for _ in range(2):
        lease = (await first.admit("rpm", limits))["lease"]
        first.finish(lease)
    lease = (await first.admit("tpm", limits))["lease"]
    first.charge(lease, 900, 150)
    first.finish(lease)
    deadline = time.time() + 10
    while len(DailyUsage(url, "app").load_windows().get("tpm", ([], []))[1]) < 1:
        assert time.time() < deadline, "windows never written"
        await asyncio.sleep(0.05)
    # the ledger's process dies; Ray starts a new one with the same arguments
    second = Ledger(usage_db=url, usage_scope="app")
    assert (await second.admit("rpm", limits))["lease"]  # the third of three
    refused = await second.admit("rpm", limits)
    assert refused["lease"] is None and refused["code"] == "rate_limit_exceeded"
    refused = await second.admit("tpm", limits)
    assert refused["lease"] is None and "1000 tokens" in refused["message"]
    assert refused["headers"]["x-ratelimit-remaining-tokens"] == "0"


def test_the_flush_benchmark_times_both_halves(capsys: pytest.CaptureFixture) -> None:
    from load_tests import ledger_flush

    assert (
        ledger_flush.main(["--tenants", "2", "--requests", "5", "--rounds", "2"]) == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["tenants"] == 2 and row["on_loop_ms_median"] >= 0
    assert row["off_loop_ms_median"] > 0
