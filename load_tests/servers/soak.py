"""`python -m load_tests.servers.soak`: a long mixed load, watching for leaks.

Knows how to run the graph (as the Ray driver, like `graph_server`), drive it
for a long time with the load generator (`python -m load_tests run`, its own
process) plus chat streams that the client drops after a few events and a
trickle of hostile inputs, and what to read afterwards: each replica's RSS
and USS over time (the replica's process and its children, e.g. vLLM's
EngineCore) and their slopes, the requests the engine still holds, status counts.

    python -m load_tests.servers.soak --config configs/cpu.yaml --index IDX \\
        --duration-s 1800 --rate 0.6 --out load_tests/results/soak
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from load_tests.procs import private_by_kind_mib, tree_memory_mib
from load_tests.soak_inputs import HOSTILE, send_hostile

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MIX = "chat_stream=3,chat=1,embeddings=2,rerank=2,retrieve=2"


def sample_replicas(app: str) -> list[dict[str, Any]]:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    out = []
    now = time.time()
    for name, dep in details["applications"][app]["deployments"].items():
        for r in dep["replicas"]:
            state = str(getattr(r["state"], "value", r["state"]))
            if state == "RUNNING" and r.get("pid"):
                mem = tree_memory_mib(int(r["pid"]))
                kinds = private_by_kind_mib(int(r["pid"]))
                out.append(
                    {
                        "t": now,
                        "deployment": name,
                        "replica": r["replica_id"],
                        "pid": r["pid"],
                        **{k: round(v, 1) for k, v in mem.items()},
                        "private_mb": {k: round(v, 1) for k, v in kinds.items()},
                    }
                )
    return out


def slope_mb_per_h(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (unix time, MiB) points, in MiB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mt) * (r - mr) for t, r in points)
    return cov / var * 3600


def _slopes(rows: list[dict[str, Any]], key: str, steady_from: float) -> dict:
    """`key`'s slope after `steady_from` and over the last third of `rows`."""
    tail_from = rows[0]["t"] + 2 * (rows[-1]["t"] - rows[0]["t"]) / 3
    steady = slope_mb_per_h([(r["t"], r[key]) for r in rows if r["t"] >= steady_from])
    tail = slope_mb_per_h([(r["t"], r[key]) for r in rows if r["t"] >= tail_from])
    prefix = key.removesuffix("_mb")
    return {
        f"{prefix}_slope_mb_per_h": None if steady is None else round(steady, 1),
        f"{prefix}_last_third_slope_mb_per_h": None if tail is None else round(tail, 1),
    }


def summarize_rss(samples: list[dict[str, Any]], warmup_s: float) -> list[dict]:
    """Per replica: first/last/max RSS, and the slopes of RSS and (where
    sampled) USS after the warm-up and over the last third of its life
    (allocator and cache growth that levels off shows in the first slope, a
    leak in both; RSS that grows while USS stays flat is shared memory), and
    the private pages by mapping kind, first and last."""
    by_replica: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_replica.setdefault(s["replica"], []).append(s)
    start = min((s["t"] for s in samples), default=0.0)
    out = []
    for replica, rows in sorted(by_replica.items(), key=lambda kv: kv[1][0]["t"]):
        row: dict[str, Any] = {
            "deployment": rows[0]["deployment"],
            "replica": replica,
            "samples": len(rows),
            "first_mb": rows[0]["rss_mb"],
            "last_mb": rows[-1]["rss_mb"],
            "max_mb": max(r["rss_mb"] for r in rows),
            "lived_s": round(rows[-1]["t"] - rows[0]["t"], 1),
        }
        slopes = _slopes(rows, "rss_mb", start + warmup_s)
        row["slope_mb_per_h"] = slopes["rss_slope_mb_per_h"]
        row["last_third_slope_mb_per_h"] = slopes["rss_last_third_slope_mb_per_h"]
        if all("uss_mb" in r for r in rows):
            row["first_uss_mb"], row["last_uss_mb"] = (
                rows[0]["uss_mb"],
                rows[-1]["uss_mb"],
            )
            row.update(_slopes(rows, "uss_mb", start + warmup_s))
        if all("private_mb" in r for r in rows):
            row["private_mb_first_last"] = {
                kind: [first, rows[-1]["private_mb"].get(kind, 0.0)]
                for kind, first in rows[0]["private_mb"].items()
            }
        out.append(row)
    return out


class Background:
    """A thread repeating `fn` every `every_s` until stopped; keeps results."""

    def __init__(self, fn: Any, every_s: float) -> None:
        self.fn, self.every_s = fn, every_s
        self.results: list[Any] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.results.append(self.fn(i))
            except Exception as exc:  # a soak client must outlive one failure
                self.results.append({"error": repr(exc)})
            i += 1
            self.stop.wait(self.every_s)

    def start(self) -> Background:
        self.thread.start()
        return self

    def finish(self, timeout_s: float = 120) -> list[Any]:
        self.stop.set()
        self.thread.join(timeout_s)
        return self.results


def dropped_stream(url: str) -> Any:
    """A chat stream the client leaves after three events."""

    def run(i: int) -> dict[str, Any]:
        body = {
            "messages": [{"role": "user", "content": f"Tell me about batching ({i})"}],
            "stream": True,
            "max_tokens": 128,
        }
        with (
            httpx.Client(base_url=url, timeout=120) as c,
            c.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            seen = 0
            if r.status_code == 200:
                for line in r.iter_lines():
                    seen += line.startswith("data: ")
                    if seen >= 3:
                        break
            return {"status": r.status_code, "events": seen}

    return run


def engine_state(app: str, settle_s: float = 60) -> dict[str, Any]:
    """The generator's engine counters once in-flight work has settled."""
    from ray import serve

    handle = serve.get_deployment_handle("generator", app_name=app)
    deadline = time.time() + settle_s
    stats: dict[str, Any] = {}
    while time.time() < deadline:
        stats = handle.stats.remote().result()
        if not stats.get("num_unfinished_requests"):
            break
        time.sleep(1)
    return stats


def run_load(url: str, ns: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "load_tests",
        "run",
        f"--url={url}",
        "--scenario=mix",
        f"--mix={MIX}",
        f"--rate={ns.rate}",
        f"--duration={ns.duration_s}",
        f"--max-requests={int(ns.rate * ns.duration_s * 2) + 10}",
        f"--max-tokens={ns.max_tokens}",
        "--timeout=120",
        "--drain-s=120",
        "--no-plot",
        "-q",
        f"--out={out / 'load'}",
    ]
    subprocess.run(cmd, check=False)
    path = out / "load" / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.servers.soak")
    parser.add_argument("--config", type=Path, help="RagServingArgs YAML")
    parser.add_argument("--index", help="index folder (retrieval.index_dir)")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--duration-s", type=float, default=1800)
    parser.add_argument("--rate", type=float, default=0.6, help="mix req/s")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--sample-s", type=float, default=15)
    parser.add_argument("--warmup-s", type=float, default=180)
    parser.add_argument("--num-cpus", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("load_tests/results/soak"))
    ns = parser.parse_args(argv)
    ns.out.mkdir(parents=True, exist_ok=True)

    from graph.cli import server
    from graph.config import RagServingArgs

    overrides = [f"server.port={ns.port}"]
    if ns.index:
        overrides.append(f"retrieval.index_dir={ns.index}")
    args = RagServingArgs.load(ns.config, overrides)
    url = server.start(args, num_cpus=ns.num_cpus)
    try:
        _wait_ready(url)
        report = _soak(url, ns)
    finally:
        server.stop()
    (ns.out / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(_headline(report), indent=2))
    return 0


def _soak(url: str, ns: argparse.Namespace) -> dict[str, Any]:
    app = server_app()
    began = time.time()
    sampler = Background(lambda _i: sample_replicas(app), ns.sample_s).start()
    drops = Background(dropped_stream(url), 4.0).start()
    hostile = Background(lambda i: send_hostile(url, HOSTILE[i % len(HOSTILE)]), 15.0)
    hostile.start()
    load = run_load(url, ns, ns.out)
    dropped, attacks = drops.finish(), hostile.finish()
    engine = engine_state(app)
    time.sleep(ns.sample_s)
    samples = [
        s for batch in sampler.finish() if isinstance(batch, list) for s in batch
    ]
    # Raw samples as compressed data: the summary (soak.json) is what reads.
    with gzip.open(ns.out / "rss.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(s) for s in samples))
    return {
        "duration_s": round(time.time() - began, 1),
        "load": {
            k: load.get(k)
            for k in ("requests", "error_rate", "errors", "throughput", "latency")
        },
        "load_by_scenario": {
            name: {
                "requests": part.get("requests"),
                "by_status": (part.get("errors") or {}).get("by_status"),
            }
            for name, part in (load.get("scenarios") or {}).items()
        },
        "dropped_streams": dict(
            Counter(str(r.get("status", "error")) for r in dropped)
        ),
        "hostile": _hostile_table(attacks),
        "engine": engine,
        "rss": summarize_rss(samples, ns.warmup_s),
    }


def server_app() -> str:
    from graph.cli.server import APP_NAME

    return APP_NAME


def _hostile_table(attacks: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for a in attacks:
        row = table.setdefault(a.get("name", "?"), {"statuses": Counter(), "ms": []})
        row["statuses"][str(a.get("status", a.get("error")))] += 1
        if "ms" in a:
            row["ms"].append(a["ms"])
    return {
        name: {
            "statuses": dict(row["statuses"]),
            "max_ms": round(max(row["ms"]), 1) if row["ms"] else None,
        }
        for name, row in table.items()
    }


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "duration_s": report["duration_s"],
        "errors": (report["load"].get("errors") or {}).get("by_status"),
        "dropped_streams": report["dropped_streams"],
        "engine_unfinished": report["engine"].get("num_unfinished_requests"),
        "rss_slopes_mb_per_h": {
            f"{r['deployment']}/{r['replica'][:8]}": r["slope_mb_per_h"]
            for r in report["rss"]
        },
        "uss_last_third_slopes_mb_per_h": {
            f"{r['deployment']}/{r['replica'][:8]}": r.get(
                "uss_last_third_slope_mb_per_h"
            )
            for r in report["rss"]
        },
    }


def _wait_ready(url: str, timeout_s: float = 600) -> None:
    deadline = time.time() + timeout_s
    with httpx.Client(base_url=url, timeout=30) as c:
        while time.time() < deadline:
            try:
                if c.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(2)
    raise SystemExit(f"soak: error: graph not ready within {timeout_s} s")


if __name__ == "__main__":
    sys.exit(main())
