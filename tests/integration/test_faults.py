"""Faults on the session's real graph: replicas killed under load (SIGKILL by
the PID Serve reports), vLLM's EngineCore killed alone, a step frozen
(SIGSTOP) past a request's deadline. Each test leaves the graph ready again.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest

from tests.integration.faults_util import (
    CHAT,
    Load,
    Outcome,
    children,
    cmdline,
    kill,
    replicas,
    send,
    wait_ready,
    wait_replaced,
)


def retrieve(c: httpx.Client, i: int) -> Outcome:
    body = {"query": f"How does ragserve batch requests? {i}", "top_k": 8}
    return send(c, "POST", "/v1/retrieve", json={**body, "rerank": True})


def chat(c: httpx.Client, i: int) -> Outcome:
    body = {
        "messages": [{"role": "user", "content": f"What is ragserve? ({i})"}],
        "max_tokens": 12,
        "stream": i % 2 == 0,
        "rag": {"enabled": i % 4 < 2},
    }
    return send(c, "POST", CHAT, json=body)


def test_replicas_run_in_serves_throughput_mode(serve_graph: dict[str, Any]) -> None:
    # graph.cli.server starts the session's Ray as `ragserve serve` does: every
    # replica in Serve's throughput-optimized mode, HAProxy in front of the
    # ingress replicas' own ports (direct ingress), the lean control plane.
    for deployment in ("ingress", "embedder", "generator"):
        (replica,) = replicas(deployment)
        with open(f"/proc/{replica['pid']}/environ", "rb") as f:
            env = dict(
                item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item
            )
        assert env.get(b"RAY_SERVE_THROUGHPUT_OPTIMIZED") == b"1", deployment
        assert env.get(b"RAY_SERVE_ENABLE_HA_PROXY") == b"1", deployment
        assert env.get(b"RAY_SERVE_ENABLE_DIRECT_INGRESS") == b"1", deployment
        assert env.get(b"RAY_SERVE_CONTROL_LOOP_INTERVAL_S") == b"0.5", deployment


def test_haproxy_serves_the_port_and_binds_loopback_only(
    serve_graph: dict[str, Any],
) -> None:
    import psutil

    port = serve_graph["args"].server.port
    haproxies = [
        p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"
    ]
    ours = [p for p in haproxies if any(c.laddr.port == port for c in _listening(p))]
    assert ours, f"no HAProxy listens on {port}"
    for proc in ours:
        # Ray renders its stats and Prometheus frontends as `bind *:PORT`;
        # graph.cli.haproxy pins them to server.host.
        addresses = {c.laddr.ip for c in _listening(proc)}
        assert addresses == {"127.0.0.1"}, addresses
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200


def _listening(proc: Any) -> list[Any]:
    return [c for c in proc.net_connections(kind="inet") if c.status == "LISTEN"]


@pytest.mark.parametrize("step", ["embedder", "retriever", "reranker"])
def test_a_step_replica_killed_under_load_loses_no_request(
    serve_graph: dict[str, Any], step: str
) -> None:
    url = serve_graph["url"]
    wait_ready(url)
    before = replicas(step)
    with Load(url, retrieve, clients=4) as load:
        load.wait_ok(8)
        for victim in before:
            kill(victim["pid"], signal.SIGKILL)
        killed_at = time.time()
        wait_replaced(step, {r["replica_id"] for r in before})
        load.wait_ok(12, since=killed_at)
    bad = [o for _, o in load.outcomes if not o.ok]
    assert not bad, (load.summary(), [(o.status, o.detail) for o in bad[:5]])
    assert len(load.outcomes) >= 20


def test_a_killed_generator_gives_only_200_and_503_with_retry_after(
    serve_graph: dict[str, Any],
) -> None:
    url = serve_graph["url"]
    wait_ready(url)
    before = replicas("generator")
    # Requests that queue for the replacement are answered (a 200 once it is
    # up, else a 503 at generate_start_timeout_s): the client outwaits that.
    bound = serve_graph["args"].resilience.generate_start_timeout_s
    with Load(url, chat, clients=4, timeout_s=bound + 60) as load:
        load.wait_ok(4)
        kill(before[0]["pid"], signal.SIGKILL)
        killed_at = time.time()
        wait_replaced("generator", {r["replica_id"] for r in before})
        load.wait_ok(4, since=killed_at)
    summary = load.summary()
    for t, o in load.outcomes:
        when = round(t - killed_at, 1)
        assert o.status in (200, 503), (summary, when, o.status, o.detail)
        if o.status == 503:
            assert o.retry_after and int(o.retry_after) >= 1, o
        if o.stream_error is not None:
            # Lost mid-stream: a final error event, then the stream's end.
            assert o.stream_error["type"] == "service_unavailable_error", o
            assert o.done, o
    wait_ready(url)


def engine_core(replica_pid: int) -> int:
    """vLLM's EngineCore: the child of the generator replica that vLLM titles
    `VLLM::EngineCore`."""
    cores = [p for p in children(replica_pid) if "EngineCore" in cmdline(p)]
    assert len(cores) == 1, [(p, cmdline(p)) for p in children(replica_pid)]
    return cores[0]


def test_killing_the_engine_core_alone_gets_the_generator_replaced(
    serve_graph: dict[str, Any], client: httpx.Client
) -> None:
    wait_ready(serve_graph["url"])
    before = replicas("generator")
    kill(engine_core(before[0]["pid"]), signal.SIGKILL)
    # The replica process lives on with a dead engine: requests are refused
    # with a retryable 503 until Serve's health check replaces it.
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    seen: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        r = client.post(CHAT, json={**body, "rag": {"enabled": False}})
        seen.append(r.status_code)
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "service_unavailable_error"
            break
        time.sleep(0.5)
    assert 503 in seen, seen
    fresh = wait_replaced("generator", {r["replica_id"] for r in before})
    assert fresh["pid"] != before[0]["pid"]
    wait_ready(serve_graph["url"])
    assert client.post(CHAT, json=body).status_code == 200


def test_a_frozen_step_ends_at_the_deadline_as_504(
    serve_graph: dict[str, Any], client: httpx.Client
) -> None:
    wait_ready(serve_graph["url"])
    frozen = replicas("embedder")
    for r in frozen:
        kill(r["pid"], signal.SIGSTOP)
    try:
        r = client.post(
            "/v1/retrieve",
            json={"query": "anything"},
            headers={"X-Request-Timeout": "3"},
        )
        assert r.status_code == 504, r.text
        err = r.json()["error"]
        assert (err["code"], err["type"]) == ("deadline_exceeded", "timeout_error")
        stream = {
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
            "max_tokens": 4,
        }
        r = client.post(CHAT, json=stream, headers={"X-Request-Timeout": "2"})
        assert r.status_code == 504, r.text
    finally:
        for r in frozen:
            kill(r["pid"], signal.SIGCONT)
    wait_ready(serve_graph["url"])


def test_a_stream_past_its_deadline_ends_with_an_error_event(
    serve_graph: dict[str, Any],
) -> None:
    from ray import serve

    generator = serve.get_deployment_handle("generator", app_name="ragserve")
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": True,
        "max_tokens": 900,
        "ignore_eos": True,
        "rag": {"enabled": False},
    }
    with httpx.Client(base_url=serve_graph["url"], timeout=60) as c:
        outcome = send(c, "POST", CHAT, json=body, headers={"X-Request-Timeout": "4"})
    assert outcome.status == 200, outcome
    assert outcome.stream_error is not None, outcome
    assert outcome.stream_error["code"] == "deadline_exceeded"
    assert outcome.done
    # The engine stopped working on it (aborted, not run to 900 tokens).
    deadline = time.time() + 30
    while time.time() < deadline:
        if generator.stats.remote().result()["num_unfinished_requests"] == 0:
            break
        time.sleep(0.2)
    assert generator.stats.remote().result()["num_unfinished_requests"] == 0
