"""Every panel of the Grafana dashboard, queried through a real Prometheus that
scrapes Ray's metrics agent, against a second copy of the graph deployed with
tracing off (metrics must not depend on tracing)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import graph_args
from tests.prometheus_server import PrometheusServer

DASHBOARD = Path(__file__).resolve().parents[2] / "kuberay/monitoring"
DASHBOARD /= "ragserve-dashboard.json"
APP = "ragserve-untraced"
PREFIX = "/untraced"
CHAT = {
    "messages": [{"role": "user", "content": "How does ragserve batch requests?"}],
    "max_tokens": 8,
    "stream": True,
}


@pytest.fixture(scope="module")
def untraced(
    serve_graph: dict[str, Any], docs_index: Path, tiny_llama: Path
) -> Iterator[str]:
    """The same graph as a second Serve application, no OTLP endpoint at all."""
    from ray import serve

    from graph.config import RagServingArgs
    from graph.serve.builder import build_app

    port = serve_graph["args"].server.port
    args = RagServingArgs.load(graph_args(docs_index, tiny_llama, port, None))
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, blocking=False)
    url = serve_graph["url"] + PREFIX
    try:
        deadline = time.time() + 300
        with httpx.Client(base_url=url, timeout=30) as client:
            while client.get("/ready").status_code != 200:
                if time.time() > deadline:
                    pytest.fail(f"{APP} did not become ready in 300 s")
                time.sleep(2)
        yield url
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def prometheus(serve_graph: dict[str, Any]) -> Iterator[PrometheusServer]:
    """Debian's prometheus scraping this Ray node's metrics agent every 3 s."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    try:
        server = PrometheusServer([f"127.0.0.1:{port}"], interval_s=3.0)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, variables filled in as Grafana
    would for this application."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (
            panel["title"],
            target["expr"]
            .replace("$__rate_interval", "2m")
            .replace("$application", APP),
        )
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


async def traffic(url: str, burst: bool) -> list[httpx.Response]:
    """Two streamed chats at once and, when `burst`, 64 embeddings at once (the
    embedder admits 16 + 16 queued, so some answer 503)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        calls = [c.post("/v1/chat/completions", json=CHAT) for _ in range(2)]
        if burst:
            calls += [
                c.post("/v1/embeddings", json={"input": f"overload {i} " * 20})
                for i in range(64)
            ]
        return list(await asyncio.gather(*calls))


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def test_every_dashboard_panel_has_data_with_tracing_off(
    prometheus: PrometheusServer, untraced: str
) -> None:
    queries = panel_queries()
    gpu = [(t, q) for t, q in queries if "gpu_memory" in q]
    wanted = [(t, q) for t, q in queries if "gpu_memory" not in q]
    statuses: set[int] = set()
    missing = wanted
    deadline = time.time() + 300
    round_no = 0
    while missing and time.time() < deadline:
        # Rates need an increase between two scrapes of Ray's agent, which
        # reports every few seconds: keep traffic going until each panel shows.
        responses = asyncio.run(traffic(untraced, burst=round_no % 3 == 0))
        statuses |= {r.status_code for r in responses}
        assert all("x-trace-id" not in r.headers for r in responses), "tracing on"
        round_no += 1
        time.sleep(6)
        missing = [(t, q) for t, q in wanted if not has_data(prometheus.query(q))]

    assert not missing, (
        "panels without data:\n"
        + "\n".join(f"{t}: {q}" for t, q in missing)
        + f"\ntargets: {prometheus.targets()}"
    )
    assert {200, 503} <= statuses, statuses
    # The handle-queue wait is there with tracing off, for every step.
    (_, p95), *_ = [(t, q) for t, q in wanted if t.startswith("Queue wait")]
    seen = {(r["metric"]["node"], r["metric"]["queue"]) for r in prometheus.query(p95)}
    for node in ("embedder", "retriever", "reranker", "generator"):
        assert (node, "handle") in seen, seen
    assert {("embedder", "batch"), ("generator", "engine")} <= seen, seen
    # No GPU here: the GPU panel stays empty rather than showing zeros.
    if not _cuda():
        assert all(prometheus.query(q) == [] for _, q in gpu)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
