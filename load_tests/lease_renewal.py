"""`python -m load_tests.lease_renewal`: what the ingress replicas' lease
renewals cost the tenant ledger on its event loop: a steady renewal (every
lease known) and the first one a restarted ledger gets (every lease and slot
taken up).

    python -m load_tests.lease_renewal --replicas 4 --leases 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from tenants.ledger import Ledger


async def _held(ledger: Ledger, replica: int, leases: int, slots: int) -> dict:
    held = {}
    for i in range(leases):
        lid = f"r{replica}-{i}"
        tenant = f"tenant-{i % 10}"
        await ledger.admit(tenant, {}, f"replica-{replica}", lid)
        granted = i < slots and (await ledger.acquire(lid, 1.0)).status == "ok"
        held[lid] = (tenant, "held" if granted else "none", 1.0, 0)
    return held


async def _run(ns: argparse.Namespace) -> dict[str, float]:
    slots = ns.replicas * ns.leases
    ledger = Ledger(slots=slots + 1)
    held = [await _held(ledger, r, ns.leases, ns.leases) for r in range(ns.replicas)]
    steady, adopt = [], []
    for _ in range(ns.rounds):
        began = time.perf_counter()
        for r, h in enumerate(held):
            ledger.renew(f"replica-{r}", h, [])
        steady.append(time.perf_counter() - began)
        fresh = Ledger(slots=slots + 1)  # the ledger restarted
        began = time.perf_counter()
        for r, h in enumerate(held):
            fresh.renew(f"replica-{r}", h, [])
        adopt.append(time.perf_counter() - began)
        assert fresh.stats()["running"] == slots
    return {
        "steady_ms_median": round(statistics.median(steady) * 1e3, 3),
        "restart_ms_median": round(statistics.median(adopt) * 1e3, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.lease_renewal")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--leases", type=int, default=64, help="per replica")
    parser.add_argument("--rounds", type=int, default=20)
    ns = parser.parse_args(argv)
    if min(ns.replicas, ns.leases, ns.rounds) < 1:
        parser.error("every count must be at least 1")
    print(json.dumps({**vars(ns), **asyncio.run(_run(ns))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
