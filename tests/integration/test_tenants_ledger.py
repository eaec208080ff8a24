"""Tenants when a process dies, against the tenants' own two-replica app: an
ingress replica killed under load (its requests end at once, its leases are
freed within ten missed renewals), and the ledger actor killed (a daily
quota, the rpm window and a held concurrency lease all survive it)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.integration.tenants_graph import (
    APP,
    WINDOW_S,
    add_tenant,
    bearer,
    ledger_actor,
    ray_get,
)


def test_an_ingress_replica_killed_under_load_loses_only_its_own_requests(
    tgraph: dict[str, Any],
) -> None:
    """SIGKILL of one of two ingress replicas under a 4-client load: the
    requests it was serving end at once (Serve's proxy answers them; nothing
    hangs), every request that starts after the kill is a 200 from the other
    replica, Serve starts a replacement, and the leases the dead replica
    held are freed once it has missed ten renewals (they used to count
    against the tenant for `lease_timeout_s`, ten minutes)."""
    from tests.integration.faults_util import CHAT, replicas, send, wait_replaced

    key = add_tenant(tgraph, "ha-tenant")
    before = replicas("ingress", app=APP)
    assert len(before) == 2, before
    seen: list[tuple[float, float, int, str]] = []  # start, end, status, detail
    killed_at = float("inf")
    stop = time.time() + 600

    def client(n: int) -> None:
        msgs = [{"role": "user", "content": "What is RAG?"}]
        with httpx.Client(
            base_url=tgraph["url"], headers=bearer(key), timeout=120
        ) as c:
            i = 0
            while time.time() < min(stop, killed_at + 8):
                i += 1
                started = time.time()
                body = {"messages": msgs, "max_tokens": 8, "stream": i % 2 == 0}
                o = send(c, "POST", CHAT, json=body)
                ok = o.status == 200 and o.stream_error is None and o.done
                seen.append((started, time.time(), 200 if ok else o.status, o.detail))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, n) for n in range(4)]
        while sum(1 for s in seen if s[2] == 200) < 8:
            assert time.time() < stop, seen
            time.sleep(0.2)
        killed_at = time.time()
        os.kill(before[0]["pid"], signal.SIGKILL)
        for f in futures:
            f.result()
    lost = [s for s in seen if s[2] != 200]
    # only what was in flight when the replica died: started before, ended soon
    assert len(lost) <= 4, lost
    for started, ended, _, _ in lost:
        assert started < killed_at + 0.5 and ended < killed_at + 5, (killed_at, lost)
    after = [s for s in seen if s[0] > killed_at + 0.5]
    assert len(after) >= 8 and all(s[2] == 200 for s in after), after
    ledger = ledger_actor()
    while (active := ray_get(ledger.usage.remote("ha-tenant"))["active"]) > 0:
        # the dead replica's leases: freed once it has missed 10 renewals
        assert time.time() < killed_at + 30, active
        time.sleep(0.5)
    print(
        f"[ingress replica killed: {len(seen)} requests, lost "
        f"{[(s[2], round(s[1] - killed_at, 2), s[3][:60]) for s in lost]}, "
        f"{len(after)} after it all 200; its leases freed "
        f"{time.time() - killed_at:.1f} s after the kill]"
    )
    wait_replaced("ingress", {r["replica_id"] for r in before}, 120, app=APP)


def test_quota_and_rpm_survive_the_ledgers_death(tgraph: dict[str, Any]) -> None:
    """The ledger actor killed (Ray restarts it): today's token counts and
    this window's requests come back from the tenant database, so a spent
    quota stays spent and a tenant at its rpm stays there."""
    import ray

    key = add_tenant(tgraph, "ledger-quota-tenant", daily_tokens=1)
    rpm_key = add_tenant(tgraph, "ledger-rpm-tenant", rpm=2)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    chat, models = tgraph["url"] + "/v1/chat/completions", tgraph["url"] + "/v1/models"
    assert (
        httpx.post(chat, json=body, headers=bearer(key), timeout=120).status_code == 200
    )
    first = time.time()
    for _ in range(2):
        assert httpx.get(models, headers=bearer(rpm_key), timeout=30).status_code == 200
    time.sleep(1.5)  # the ledger writes its counts every second
    ledger = ledger_actor()
    pid = ray.get(ledger.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(ledger, no_restart=False)
    deadline = time.time() + 120
    seen: list[int] = []
    while time.time() < deadline:
        r = httpx.get(models, headers=bearer(rpm_key), timeout=30)
        seen.append(r.status_code)
        if r.status_code in (200, 429):
            break
        time.sleep(0.2)  # refused while the ledger restarts
    # a fresh ledger must not admit a third request inside the window
    assert r.status_code == 429 or time.time() - first > WINDOW_S, seen
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    seen = []
    while time.time() < deadline:
        r = httpx.post(chat, json=body, headers=bearer(key), timeout=60)
        seen.append(r.status_code)
        if r.status_code == 429:
            break
        assert r.status_code != 200, seen  # a fresh ledger must not admit it
        time.sleep(1)
    assert seen[-1] == 429, seen
    assert r.json()["error"]["code"] == "insufficient_quota"
    restarted = ray.get(ledger.__ray_call__.remote(lambda self: os.getpid()))
    assert restarted != pid  # a new process answered


def test_concurrency_survives_the_ledgers_death(tgraph: dict[str, Any]) -> None:
    """A lease held across the ledger's death still counts: this test holds
    it through the same `ActorLedger` an ingress replica uses (so it can hold
    it as long as it likes), the ledger is killed, and the restarted one
    takes the lease up from the holder's renewal, so the tenant at
    `--max-concurrency 1` gets 429 through the real ingress until the lease
    is returned, then 200."""
    import asyncio
    import threading

    import ray

    from graph.gate.ledger_actor import ActorLedger

    key = add_tenant(tgraph, "ledger-conc-tenant", max_concurrency=1)
    models = tgraph["url"] + "/v1/models"
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def on_loop(fn: Any) -> Any:
        async def call() -> Any:
            out = fn()
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.run_coroutine_threadsafe(call(), loop).result(60)

    holder = ActorLedger(tgraph["args"], app=APP)
    try:
        limits = {"max_concurrency": 1}
        lease = on_loop(lambda: holder.admit("ledger-conc-tenant", limits))["lease"]
        assert lease
        refused = httpx.get(models, headers=bearer(key), timeout=30)
        assert refused.status_code == 429, refused.text
        ray.kill(ledger_actor(), no_restart=False)
        killed = time.time()
        seen: list[int] = []
        while time.time() < killed + 8:  # restart, hold-back, renewal and after
            r = httpx.get(models, headers=bearer(key), timeout=30)
            seen.append(r.status_code)
            assert r.status_code in (429, 503), seen  # never a second request
            time.sleep(0.2)
        assert seen[-1] == 429 and "concurrent" in r.json()["error"]["message"]
        on_loop(lambda: holder.finish(lease))
        deadline = time.time() + 10
        while (
            r := httpx.get(models, headers=bearer(key), timeout=30)
        ).status_code != 200:
            assert time.time() < deadline, r.text
            time.sleep(0.2)
        print(
            f"[ledger killed with a lease held: {seen.count(503)} x 503, "
            f"{seen.count(429)} x 429, then 200 once the lease was returned]"
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)


def test_a_ledger_an_older_ragserve_left_running_is_stopped(
    tgraph: dict[str, Any],
) -> None:
    """An upgrade in place: a detached ledger of the previous interface
    (namespace "ragserve") is stopped when a replica of this version starts,
    rather than called with arguments it does not take."""
    import ray

    from graph.gate.ledger_actor import ActorLedger, actor_name

    @ray.remote(num_cpus=0)
    class OlderLedger:
        def admit(self, tenant: str, limits: dict[str, Any]) -> None:
            return None

    older = OlderLedger.options(  # type: ignore[attr-defined]
        name=actor_name(APP), namespace="ragserve", lifetime="detached"
    ).remote()
    ray_get(older.admit.remote("t", {}))
    ActorLedger(tgraph["args"], app=APP)
    deadline = time.time() + 30
    while True:
        try:
            ray.get_actor(actor_name(APP), namespace="ragserve")
        except ValueError:
            break  # gone
        assert time.time() < deadline, "the older ledger still runs"
        time.sleep(0.2)
    assert ray_get(ledger_actor().usage.remote("nobody"))["active"] == 0
