"""A real two-release graph for the release tests: `ragserve serve --release`
in its own process (its own Ray, as a user runs it), fed by real releases.

Releases: A (the bundled docs/), B (a small corpus with a distinctive fact),
C (B's artifacts with an injected delay: a deliberately worse canary). All
three share one embedder and one generator deployment. Also the streaming
load a switch runs under, and the graph's Prometheus series.
"""

from __future__ import annotations

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
import yaml

from load_tests.procs import replica_rss_mib, tree_rss_mib
from tests.integration.conftest import graph_args

__all__ = ["replica_rss_mib", "tree_rss_mib"]

FACT = (
    "The ragserve lighthouse keeper is a purple axolotl named Quillon, who "
    "counts exactly forty-two ships every night."
)
B_DOCS = {
    "lighthouse.md": f"# The lighthouse\n\n{FACT}\n\nShe lives on Gullrock island.\n",
    "tides.md": "# Tides\n\nThe tide at Gullrock rises twice a day and the harbour "
    "closes when the wind blows from the north.\n",
}


def cli(*argv: str, env: dict[str, str], timeout: float = 300) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "graph.cli.main", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def release_config(tmp: Path, model: Path, port: int, otlp: str | None) -> Path:
    data = graph_args(tmp, model, port, otlp)
    data["retrieval"].pop("index_dir")
    data["tenants"]["audit_log"] = str(tmp / "audit.jsonl")  # = graph_env's
    # Two retrievers and three releases on 2 CPUs: keep every node at 1 replica.
    for node in ("embedder", "retriever", "reranker"):
        data["deployments"].setdefault(node, {})["num_replicas"] = 1
    return write_config(tmp / "release.yaml", data)


def serve_config(base: Path, tmp: Path) -> Path:
    data = yaml.safe_load(base.read_text())
    data["deployments"]["ingress"] = {"num_replicas": 1}
    data["releases"] = {
        "weights": {"A": 90, "B": 10},
        "warmup_queries": ["How does ragserve batch requests?"],
        "grace_period_s": 20,
        "canary": {
            "min_requests": 8,
            "window_s": 60,
            "max_latency_p95_ratio": 3.0,
            "max_ttft_p95_ratio": 3.0,
            "interval_s": 0.5,
        },
    }
    return write_config(tmp / "serve.yaml", data)


def start_graph(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "graph.cli.main", "serve", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> float:
    started = time.perf_counter()
    deadline = time.time() + timeout
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"graph exited: {log.read_text()[-3000:]}")
            try:
                if client.get("/ready").status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(1)
    raise RuntimeError(f"graph not ready in {timeout} s: {log.read_text()[-3000:]}")


def wait_warm(url: str, timeout: float) -> None:
    """Until every release (weight or not) has passed its warm-up."""
    deadline = time.time() + timeout
    states: dict[str, str] = {}
    while time.time() < deadline:
        data = httpx.get(url + "/admin/traffic", timeout=30).json()
        states = {r["name"]: r["state"] for r in data["releases"]}
        if set(states.values()) == {"warm"}:
            return
        time.sleep(1)
    raise RuntimeError(f"releases not warm in {timeout} s: {states}")


def graph_env(tmp: Path, registry: Path) -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env["RAGSERVE_REGISTRY"] = str(registry)
    env["RAGSERVE_AUDIT_LOG"] = str(tmp / "audit.jsonl")
    # Its own Ray: never the session graph's cluster.
    env["RAY_TMPDIR"] = f"/tmp/ray-rel-{os.getpid()}"  # short: socket paths
    env.pop("RAY_ADDRESS", None)
    return env


def scrape_until(graph: dict[str, Any], needle: str) -> str:
    ports = metrics_ports(graph)
    deadline = time.time() + 60
    text = ""
    while time.time() < deadline:
        for port in ports:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            except httpx.HTTPError:
                continue
            if needle in text and "ragserve_requests_total" in text:
                return text
        time.sleep(2)
    return text


def metrics_ports(graph: dict[str, Any]) -> list[int]:
    # Ray writes each node's metrics export port into its session folder.
    session = Path(graph["env"]["RAY_TMPDIR"]) / "ray" / "session_latest"
    return [
        int(p.read_text().strip())
        for p in session.glob("metrics_export_port_*")
        if p.read_text().strip().isdigit()
    ]


class StreamingLoad:
    """Four clients streaming chat completions in a loop; every request's
    start time, status and release are kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str | None]] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]

    def _run(self) -> None:
        body = {
            "messages": [{"role": "user", "content": "How does batching work?"}],
            "stream": True,
            "max_tokens": 4,
        }
        with httpx.Client(base_url=self.url, timeout=120) as c:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    with c.stream("POST", "/v1/chat/completions", json=body) as r:
                        text = r.read().decode()
                        ok = r.status_code == 200 and not error_event(text)
                        status = r.status_code if ok else 599
                        self.results.append(
                            (started, status, r.headers.get("x-ragserve-release"))
                        )
                        if not ok:  # what went wrong, for the assertion's message
                            self.errors.append(f"{r.status_code} {text[-400:]!r}")
                except httpx.HTTPError as exc:
                    self.results.append((started, 0, None))
                    self.errors.append(repr(exc))

    def __enter__(self) -> StreamingLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=120)


def error_event(text: str) -> bool:
    """An SSE `data:` event whose JSON is an error envelope (not a chunk whose
    text merely says "error")."""
    events = [
        line[5:].strip() for line in text.splitlines() if line.startswith("data:")
    ]
    return any("error" in json.loads(e) for e in events if e != "[DONE]")


def traffic(graph: dict[str, Any], *argv: str) -> tuple[int, str, str]:
    """`ragserve ARGV --address` the graph (traffic or release commands)."""
    return cli(*argv, "--address", graph["url"], env=graph["env"], timeout=120)


def show(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The graph's releases by name, as `/admin/traffic` lists them."""
    data = httpx.get(graph["url"] + "/admin/traffic", timeout=30).json()
    return {r["name"]: r for r in data["releases"]}


def states(graph: dict[str, Any], *names: str) -> set[str]:
    """The set of states the named releases are in."""
    releases = show(graph)
    return {releases[n]["state"] for n in names}


def switch(
    graph: dict[str, Any], load: StreamingLoad, argv: list[str], to: str
) -> dict:
    """Run `argv` under `load`; every request started after it went to `to`."""
    time.sleep(3)  # load running before the switch
    t0 = time.monotonic()
    code, out, err = traffic(graph, *argv)
    returned = time.monotonic()
    assert code == 0, err
    applied = float(out.split("applied to the running graph in ")[1].split()[0])
    time.sleep(3)  # and after it
    after = [r for r in load.results if r[0] > returned]
    assert after, "no request started after the switch"
    assert {r[2] for r in after} == {to}, Counter(r[2] for r in after)
    return {
        "command_s": round(returned - t0, 2),
        "applied_s": applied,
        "after": len(after),
    }
