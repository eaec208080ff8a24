"""Two probes of the tenant gate over HTTP: what it costs a request, and how
many requests a tenant's rpm limit admits over a real minute.

Knows the OpenAI-style routes and rate-limit headers; nothing of the graph's
code.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx


async def rpm_minute(url: str, key: str, seconds: float, rate: float) -> dict:
    """`seconds` of `rate` gated requests/s as `key`: how many were admitted,
    refused with 429, and the most admitted in any rolling 60 s."""
    sent: list[tuple[float, int, dict[str, str]]] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(i: int) -> None:
            await asyncio.sleep(i / rate)
            at = time.time()
            r = await client.get("/v1/models", headers=headers)
            sent.append((at, r.status_code, dict(r.headers)))

        await asyncio.gather(*(one(i) for i in range(int(seconds * rate))))
    ok = sorted(at for at, status, _ in sent if status == 200)
    refused = [h for _, status, h in sent if status == 429]
    worst = max((sum(1 for x in ok if a <= x < a + 60) for a in ok), default=0)
    return {
        "sent": len(sent),
        "admitted": len(ok),
        "refused_429": len(refused),
        "max_admitted_in_any_60s": worst,
        "all_429_have_headers": all(
            "retry-after" in h and "x-ratelimit-remaining-requests" in h
            for h in refused
        ),
    }


async def overhead(url: str, key: str, n: int = 200) -> dict[str, float]:
    """Median latency of gated `/v1/models` against ungated `/health`."""
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for name, path, headers in (
            ("health_no_gate", "/health", {}),
            ("models_gated", "/v1/models", {"Authorization": f"Bearer {key}"}),
        ):
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await client.get(path, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
            out[f"{name}_p50_ms"] = statistics.median(times)
    out["gate_cost_p50_ms"] = out["models_gated_p50_ms"] - out["health_no_gate_p50_ms"]
    return out
