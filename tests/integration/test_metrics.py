"""Prometheus series the graph exports through Ray's metrics agent."""

from __future__ import annotations

import time
from typing import Any

import httpx


def scrape() -> str:
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


def test_queue_wait_batch_size_and_generation_series(
    serve_graph: dict[str, Any], client: httpx.Client
) -> None:
    body = {
        "messages": [{"role": "user", "content": "How does ragserve batch requests?"}],
        "max_tokens": 8,
    }
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    wanted = [
        "ragserve_queue_wait_ms_bucket{",
        'node="embedder"',
        'queue="batch"',
        'queue="handle"',
        'queue="engine"',
        "ragserve_batch_size_bucket{",
        "ragserve_time_to_first_token_ms_bucket{",
        "ragserve_inter_token_latency_ms_bucket{",
        "ragserve_generated_tokens_total",
        "ragserve_kv_cache_usage",
    ]
    deadline = time.time() + 60  # the agent exports on a period
    text = ""
    while time.time() < deadline:
        text = scrape()
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    missing = [w for w in wanted if w not in text]
    assert not missing, missing
    # Serve's own tags split the series by deployment, as dashboards need.
    line = next(x for x in text.splitlines() if "ragserve_batch_size_count{" in x)
    assert 'deployment="' in line and 'node="' in line
    # No CUDA here: no GPU memory gauge rather than zeros.
    assert "ragserve_gpu_memory_bytes{" not in text
