"""`python -m load_tests.ledger_flush`: what the tenant ledger's once-a-second
save costs, on its event loop (copying the windows) and off it (compacting
and writing them, with today's counts, to a real SQLite tenant database).

    python -m load_tests.ledger_flush --tenants 10 --requests 300 --charges 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tenants.limits import RateLimiter, utc_day
from tenants.records import Limits
from tenants.usage import DailyUsage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.ledger_flush")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300, help="per window")
    parser.add_argument("--charges", type=int, default=4, help="per request")
    parser.add_argument("--rounds", type=int, default=20)
    ns = parser.parse_args(argv)
    if min(ns.tenants, ns.requests, ns.charges, ns.rounds) < 1:
        parser.error("every count must be at least 1")
    limiter, now = RateLimiter(), time.time()
    for t in range(ns.tenants):
        for i in range(ns.requests):  # spread over the last minute
            when = now - 60 + 60 * i / ns.requests
            lease = limiter.admit(f"tenant-{t}", Limits(), when).lease
            assert lease is not None
            for _ in range(ns.charges):
                limiter.charge(lease, 16, when)
            limiter.finish(lease)
    day = utc_day(now)
    counts = {f"tenant-{t}": 1000 for t in range(ns.tenants)}
    on_loop, off_loop = [], []
    with tempfile.TemporaryDirectory() as tmp:
        usage = DailyUsage(f"sqlite:///{Path(tmp) / 'tenants.db'}", "bench")
        for _ in range(ns.rounds):
            began = time.perf_counter()
            windows = limiter.windows(now)
            on_loop.append(time.perf_counter() - began)
            began = time.perf_counter()
            usage.save(day, counts, windows)
            off_loop.append(time.perf_counter() - began)
        usage.close()
    print(
        json.dumps(
            {
                **vars(ns),
                "on_loop_ms_median": round(statistics.median(on_loop) * 1e3, 2),
                "off_loop_ms_median": round(statistics.median(off_loop) * 1e3, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
