"""A real two-release graph for the release tests: `ragserve serve --release`
in its own process (its own Ray, as a user runs it), fed by real releases.

Releases: A (the bundled docs/), B (a small corpus with a distinctive fact),
C (B's artifacts with an injected delay: a deliberately worse canary). All
three share one embedder and one generator deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
        [sys.executable, "-m", "graph.cli", *argv],
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
            [sys.executable, "-m", "graph.cli", "serve", *argv],
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
