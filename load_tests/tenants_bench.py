"""`python -m load_tests.tenants_bench`: tenants on a real graph, over HTTP only.

Starts the graph (`load_tests.servers.graph_server`, two ingress replicas) with a
private tenant store, adds tenants with the `ragserve tenant` CLI, and
measures:

1. fair share: tenant B's time to first token with 1 stream, alone and next
   to tenant A's 16 streams; A's tokens/s alone and next to B;
2. limits over a real minute: a tenant at `--rpm 60` sent 5 requests/s for
   two minutes; the most admitted in any rolling 60 s;
3. the gate's cost: latency of a trivial `/v1/models` with key, limits and
   audit against `/health`, which passes no gate.

Writes `results.json` and `results.md` under `load_tests/results/tenants-<time>/`.

    python -m load_tests.tenants_bench --index ~/.cache/ragserve/index/docs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from httpx_sse import EventSource

from load_tests import span_breakdown
from load_tests.gate_probes import overhead, rpm_minute
from load_tests.otlp_sink import OTLPSink
from load_tests.sse import read_event

QUESTION = "How does ragserve batch requests?"


def _config(
    ns: argparse.Namespace, tmp: Path, port: int, trace_endpoint: str | None = None
) -> dict[str, Any]:
    generator: dict[str, Any] = {"default_max_tokens": ns.max_tokens}
    if ns.model:
        generator["model"] = ns.model
    cfg = {
        "models": {"generator": generator},
        "retrieval": {"index_dir": str(ns.index)},
        "deployments": {"ingress": {"num_replicas": 2}},
        "server": {"host": "127.0.0.1", "port": port},
        "tenants": {
            "db": f"sqlite:///{tmp / 'tenants.db'}",
            "audit_log": str(tmp / "audit.jsonl"),
            "fair_share": {
                "enabled": not ns.fifo,
                "max_inflight": ns.slots,
                "reserved_slots": ns.reserved_slots,
            },
        },
    }
    if trace_endpoint:
        cfg["telemetry"] = {
            "otlp_endpoint": trace_endpoint,
            "otlp_protocol": "http/protobuf",
        }
    for item in ns.set:
        _override(cfg, item)
    return cfg


def _override(cfg: dict[str, Any], item: str) -> None:
    """Apply one `--set a.b.c=VALUE` (VALUE read as YAML) to the config."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(text)


def _add_tenant(cfg: Path, name: str, *flags: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "graph.cli.main",
            "tenant",
            "add",
            name,
            *flags,
            "--config",
            str(cfg),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


async def _stream(
    client: httpx.AsyncClient, key: str, max_tokens: int
) -> tuple[float | None, int]:
    """One streaming chat: (time to first token in s, completion tokens)."""
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    started, ttft, tokens = time.perf_counter(), None, 0
    headers = {"Authorization": f"Bearer {key}"}
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=headers
    ) as r:
        if r.status_code != 200:
            await r.aread()
            return None, 0
        async for sse in EventSource(r).aiter_sse():
            ev = read_event(sse.data)
            if ev.text and ttft is None:
                ttft = time.perf_counter() - started
            if ev.usage:
                tokens = int(ev.usage.get("completion_tokens", 0))
    return ttft, tokens


async def _tenant_load(
    url: str, key: str, streams: int, ns: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """`streams` clients of one tenant, each sending one stream after another
    for `ns.phase_s`. Each request asks for `ns.max_tokens` give or take
    `ns.length_jitter` (uniformly), and each client starts within the first
    second, as independent clients do; with a jitter of 0 every stream is as
    long as every other and they all restart together (lockstep)."""
    ttfts: list[float] = []
    tokens = 0
    deadline = time.perf_counter() + ns.phase_s
    lo = max(1, round(ns.max_tokens * (1 - ns.length_jitter)))
    hi = max(lo, round(ns.max_tokens * (1 + ns.length_jitter)))
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker(n: int) -> None:
            nonlocal tokens
            rng = random.Random(seed * 1000 + n)
            if ns.length_jitter > 0:
                await asyncio.sleep(rng.uniform(0, 1))
            while time.perf_counter() < deadline:
                ttft, got = await _stream(client, key, rng.randint(lo, hi))
                if ttft is not None:
                    ttfts.append(ttft)
                tokens += got

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(streams)))
        elapsed = time.perf_counter() - started
    return {
        "streams": streams,
        "requests": len(ttfts),
        "ttft_p50_s": _pct(ttfts, 50),
        "ttft_p95_s": _pct(ttfts, 95),
        "tokens_per_s": tokens / elapsed,
    }


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _fair_share(url: str, keys: dict[str, str], ns: argparse.Namespace) -> dict:
    at = [time.time_ns()]
    b_alone = await _tenant_load(url, keys["B"], 1, ns, 1)
    at.append(time.time_ns())
    a_alone = await _tenant_load(url, keys["A"], 16, ns, 2)
    at.append(time.time_ns())
    a_both, b_both = await asyncio.gather(
        _tenant_load(url, keys["A"], 16, ns, 2), _tenant_load(url, keys["B"], 1, ns, 1)
    )
    at.append(time.time_ns())
    b_ratio = (b_both["ttft_p95_s"] or 0) / (b_alone["ttft_p95_s"] or 1)
    a_floor = 0.8 * a_alone["tokens_per_s"] - b_both["tokens_per_s"]
    return {
        "B_alone": b_alone,
        "A_alone": a_alone,
        "A_with_B": a_both,
        "B_with_A": b_both,
        "B_p95_ttft_ratio": b_ratio,
        "B_ok": b_ratio <= 1.5,
        "A_tokens_floor": a_floor,
        "A_ok": a_both["tokens_per_s"] >= a_floor,
        "phases_ns": {"B_alone": at[0:2], "A_alone": at[1:3], "both": at[2:4]},
    }


def _markdown(res: dict[str, Any]) -> str:
    fs, rpm, ov = res["fair_share"], res["rpm"], res["overhead"]
    rows = [
        "| phase | streams | requests | TTFT p50 s | TTFT p95 s | tokens/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("B_alone", "A_alone", "A_with_B", "B_with_A"):
        p = fs[name]
        rows.append(
            f"| {name} | {p['streams']} | {p['requests']} | "
            f"{p['ttft_p50_s'] or 0:.2f} | {p['ttft_p95_s'] or 0:.2f} | "
            f"{p['tokens_per_s']:.1f} |"
        )
    return "\n".join(
        [
            "# Tenants benchmark",
            "",
            *rows,
            "",
            f"B's p95 TTFT next to A / alone: {fs['B_p95_ttft_ratio']:.2f} "
            f"(target <= 1.5: {'met' if fs['B_ok'] else 'NOT met'})",
            f"A's tokens/s next to B: {fs['A_with_B']['tokens_per_s']:.1f}, floor "
            f"{fs['A_tokens_floor']:.1f} ({'met' if fs['A_ok'] else 'NOT met'})",
            "",
            f"rpm 60 for {rpm['sent']} requests at 5/s: admitted {rpm['admitted']}, "
            f"429 {rpm['refused_429']}, most in any rolling minute "
            f"{rpm['max_admitted_in_any_60s']}"
            if rpm
            else "rpm minute: not run (--rpm-s 0)",
            "",
            f"gate cost (auth + limits + audit) p50: {ov['gate_cost_p50_ms']:.2f} ms "
            f"(/v1/models {ov['models_gated_p50_ms']:.2f} ms vs /health "
            f"{ov['health_no_gate_p50_ms']:.2f} ms)",
            "",
            *span_breakdown.section(res.get("breakdown")),
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m load_tests.tenants_bench")
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--model", help="generator folder (default SmolLM2)")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--phase-s", type=float, default=60.0)
    parser.add_argument("--rpm-s", type=float, default=120.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--length-jitter",
        type=float,
        default=0.5,
        help="each request's max_tokens varies by this fraction (0: lockstep)",
    )
    parser.add_argument(
        "--slots", type=int, help="fair-share slots (default: max_num_seqs)"
    )
    parser.add_argument(
        "--reserved-slots", type=int, default=1, help="slots kept for newcomers"
    )
    parser.add_argument(
        "--fifo", action="store_true", help="fair share off: the FIFO comparison"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. models.generator.threads=1 (repeatable)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="trace every request to a local OTLP sink and report where B's "
        "time to first token goes, alone and next to A",
    )
    parser.add_argument("--out", type=Path, default=Path("load_tests/results"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    if not 0 <= ns.length_jitter < 1:
        parser.error(f"--length-jitter must be in [0, 1), got {ns.length_jitter}")
    tmp = Path(tempfile.mkdtemp(prefix="ragserve-tenants-bench-"))
    cfg = tmp / "config.yaml"
    sink = OTLPSink(keep=True).start() if ns.trace else None
    endpoint = sink.endpoint if sink else None
    cfg.write_text(yaml.safe_dump(_config(ns, tmp, ns.port, endpoint)))
    keys = {n: _add_tenant(cfg, n) for n in ("A", "B")}
    keys["C"] = _add_tenant(cfg, "C", "--rpm", "60")
    ready = tmp / "ready"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "load_tests.servers.graph_server",
            "--app",
            f"main={cfg}",
            "--ready-file",
            str(ready),
        ],
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{ns.port}"
    try:
        deadline = time.time() + 600
        while not (ready.exists() and _ready(url)):
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("graph did not become ready")
            time.sleep(2)
        results: dict[str, Any] = {
            "overhead": asyncio.run(overhead(url, keys["A"])),
            "rpm": asyncio.run(rpm_minute(url, keys["C"], ns.rpm_s, 5.0))
            if ns.rpm_s > 0
            else None,
        }
        fair_share = asyncio.run(_fair_share(url, keys, ns))
        results |= {
            "fair_share": fair_share,
            "config": {
                "phase_s": ns.phase_s,
                "slots": ns.slots,
                "reserved_slots": ns.reserved_slots,
                "fair_share": not ns.fifo,
                "model": ns.model,
                "set": ns.set,
                "max_tokens": ns.max_tokens,
                "length_jitter": ns.length_jitter,
                "trace": ns.trace,
            },
        }
        if sink:
            time.sleep(10)  # the replicas' span exporters send every 5 s
            results["breakdown"] = span_breakdown.by_phase(
                sink.kept, fair_share["phases_ns"]
            )
    finally:
        server.terminate()
        server.wait(120)
        if sink:
            sink.stop()
    out = ns.out / time.strftime("tenants-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(_markdown(results))
    print(_markdown(results))
    print(f"written to {out}")
    return 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
