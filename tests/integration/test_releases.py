"""Releases live in one real graph: weights, pins, sticky sessions, a switch
and a rollback under streaming load, a canary judged worse and cut, and every
answer naming its release (header, system_fingerprint, trace, metrics).

The graph runs as a user runs it: `ragserve serve --release A --release B
--release C` in its own process and Ray cluster (`own_cluster`: before the
session graph starts, so the two never share the CPUs); `ragserve traffic`
and `ragserve release` drive it over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph.cli.main import main
from tests.factories_retrieval import write_tree
from tests.integration import releases_graph as rg
from tests.integration.conftest import free_port
from tests.otlp_receiver import OTLPReceiver

pytestmark = [pytest.mark.own_cluster, pytest.mark.slow]

RETRIEVE = {"query": "lighthouse keeper", "top_k": 1, "rerank": False}


@pytest.fixture(scope="module")
def graph(
    tmp_path_factory: pytest.TempPathFactory,
    docs_index: Path,
    tiny_llama: Path,
    otlp_receiver: OTLPReceiver,
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("releases")
    registry = tmp / "registry"
    index_b = tmp / "index-b"
    # B is a documents change: A's index with two documents added, a new
    # version beside it (only their chunks embedded), released from A.
    argv = ["index", "update", "--index", str(docs_index), "--partial", "-q"]
    docs_b = write_tree(tmp / "docs-b", rg.B_DOCS)
    assert main([*argv, "--docs", str(docs_b), "--out", str(index_b)]) == 0
    port = free_port()
    base = rg.release_config(tmp, tiny_llama, port, otlp_receiver.endpoint)
    slow = tmp / "slow.yaml"
    slow.write_text(base.read_text() + "releases:\n  fault:\n    delay_ms: 4000\n")
    for name, flags in (
        ("A", ["--index", str(docs_index), "--config", str(base)]),
        ("B", ["--from", "A", "--index", str(index_b)]),
        ("C", ["--index", str(index_b), "--config", str(slow)]),
    ):
        argv = ["release", "create", name, *flags, "--registry", str(registry)]
        assert main(argv) == 0
    env = rg.graph_env(tmp, registry)
    log = tmp / "serve.log"
    argv = ["--release", "A", "--release", "B", "--release", "C"]
    proc = rg.start_graph(
        [*argv, "--config", str(rg.serve_config(base, tmp))], env, log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = rg.wait_ready(url, proc, log, timeout=600)
        rg.wait_warm(url, timeout=300)
        print(
            f"\n[three releases ready in {ready_s:.0f} s, graph RSS "
            f"{rg.tree_rss_mib(proc.pid):.0f} MiB]"
        )
        yield {"url": url, "env": env, "proc": proc, "registry": registry, "log": log}
    finally:
        try:  # the last test stopped it already, as a user would
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except ProcessLookupError:
            pass
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)


def test_shared_deployments_and_listing(graph: dict[str, Any]) -> None:
    ready = httpx.get(graph["url"] + "/ready", timeout=30).json()
    nodes = sorted(ready["nodes"])
    # One embedder, one reranker, one generator for three releases; a retriever
    # per distinct index (C shares B's).
    assert [n for n in nodes if n.startswith("generator")] == ["generator"]
    assert [n for n in nodes if n.startswith("embedder")] == ["embedder"]
    assert len([n for n in nodes if n.startswith("retriever")]) == 2
    rss = rg.tree_rss_mib(graph["proc"].pid)
    replicas = {k: round(v) for k, v in rg.replica_rss_mib(graph["proc"].pid).items()}
    print(f"\n[deployments: {nodes}; graph RSS {rss:.0f} MiB; replicas {replicas}]")
    releases = {r["name"]: r for r in ready["releases"]}
    assert {n: (r["weight"], r["state"]) for n, r in releases.items()} == {
        "A": (90, "warm"),
        "B": (10, "warm"),
        "C": (0, "warm"),
    }
    models = httpx.get(graph["url"] + "/v1/models", timeout=30).json()
    assert {r["name"] for r in models["releases"]} == {"A", "B", "C"}
    code, out, _ = rg.cli("release", "list", env=graph["env"])
    assert code == 0 and all(f"\n{n} " in "\n" + out for n in "ABC")
    code, out, _ = rg.cli("release", "diff", "B", "C", env=graph["env"])
    assert code == 0 and "config.fault.delay_ms: 0.0 -> 4000.0" in out


def test_split_pin_and_sticky_session(graph: dict[str, Any]) -> None:
    with httpx.Client(base_url=graph["url"], timeout=60) as c:

        def one(_: int) -> str:
            r = c.post("/v1/retrieve", json=RETRIEVE)
            assert r.status_code == 200, r.text
            return r.headers["x-ragserve-release"]

        with ThreadPoolExecutor(8) as pool:
            counts = Counter(pool.map(one, range(400)))
        share_b = counts["B"] / 400
        print(f"\n[A=90 B=10 over 400 requests: {dict(counts)}, B {share_b:.1%}]")
        assert set(counts) <= {"A", "B"}
        assert abs(share_b - 0.10) <= 0.04
        pinned = c.post(
            "/v1/retrieve", json=RETRIEVE, headers={"x-ragserve-release": "B"}
        )
        assert pinned.headers["x-ragserve-release"] == "B"
        assert "Quillon" in pinned.json()["data"][0]["text"]
        unknown = c.post(
            "/v1/retrieve", json=RETRIEVE, headers={"x-ragserve-release": "Z"}
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "release_not_found"
        for session in ("alice", "bob", "carol"):
            names = {
                c.post(
                    "/v1/retrieve", json=RETRIEVE, headers={"x-session-id": session}
                ).headers["x-ragserve-release"]
                for _ in range(20)
            }
            assert len(names) == 1, (session, names)
        users = {
            c.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 1,
                    "user": "dave",
                    "rag": {"enabled": False},
                },
            ).headers["x-ragserve-release"]
            for _ in range(5)
        }
        assert len(users) == 1


def test_every_answer_names_its_release(
    graph: dict[str, Any], otlp_receiver: OTLPReceiver
) -> None:
    with httpx.Client(base_url=graph["url"], timeout=120) as c:
        body = {
            "messages": [{"role": "user", "content": "Who keeps the lighthouse?"}],
            "max_tokens": 4,
        }
        pin = {"x-ragserve-release": "B"}
        r = c.post("/v1/chat/completions", json=body, headers=pin)
        assert r.status_code == 200
        data = r.json()
        assert data["system_fingerprint"].startswith("B@")
        assert data["citations"][0]["doc_id"] == "lighthouse.md"
        trace_id = r.headers["x-trace-id"]
        with c.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=pin
        ) as s:
            events = [
                json.loads(line[6:])
                for line in s.iter_lines()
                if line.startswith("data: {")
            ]
        assert events and all(e["system_fingerprint"].startswith("B@") for e in events)
        comp = c.post(
            "/v1/completions", json={"prompt": "hello", "max_tokens": 2}, headers=pin
        )
        assert comp.json()["system_fingerprint"].startswith("B@")
    spans = otlp_receiver.wait_for(trace_id, {"rag.request", "rag.generate"})
    (root,) = [s for s in spans if s.name == "rag.request"]
    assert root.attributes["release"] == "B"
    # The release label on the graph's own series, through Ray's metrics agent.
    text = rg.scrape_until(graph, 'release="B"')
    assert "ragserve_requests_total{" in text and 'release="B"' in text


def test_switch_and_rollback_under_streaming_load(graph: dict[str, Any]) -> None:
    with rg.StreamingLoad(graph["url"]) as load:
        to_b = rg.switch(graph, load, ["traffic", "set", "A=0", "B=100"], "B")
        back = rg.switch(graph, load, ["release", "rollback"], "A")
    failed = [r for r in load.results if r[1] != 200]
    print(
        f"\n[switch to B {to_b}, rollback to A {back}; "
        f"{len(load.results)} streamed requests, {len(failed)} failed: "
        f"{load.errors[:3]}]"
    )
    # One CI run (2026-12-01) saw a single stream end in an error event on A
    # during the rollback (191 streams, cause not yet found; issue 9 stays open
    # for it). More than that is a broken switch.
    assert len(failed) <= 1, (failed[:5], load.errors[:5])
    state = rg.show(graph)
    assert state["A"]["weight"] == 100 and state["B"]["weight"] == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["traffic", "set", "A=50", "B=10"], "sum to 100"),
        (["traffic", "set", "A=110", "B=-10"], "between 0 and 100"),
        (["traffic", "set", "A=90", "Z=10"], "'Z' is not live"),
        (["traffic", "set", "A=100", "--shadow", "A=10"], "already takes all traffic"),
        (["release", "promote", "A"], "nothing to promote"),
        (["release", "rollback"], "nothing to roll back to"),
    ],
)
def test_bad_traffic_changes_nothing(
    graph: dict[str, Any], argv: list[str], needle: str
) -> None:
    before = httpx.get(graph["url"] + "/admin/traffic", timeout=30).json()
    code, _, err = rg.traffic(graph, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("ragserve: error: ") and needle in lines[0], lines[0]
    assert httpx.get(graph["url"] + "/admin/traffic", timeout=30).json() == before


def test_shadow_mirrors_without_answering(
    graph: dict[str, Any], otlp_receiver: OTLPReceiver
) -> None:
    code, _, err = rg.traffic(graph, "traffic", "set", "A=100", "--shadow", "B=100")
    assert code == 0, err
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = httpx.post(graph["url"] + "/v1/chat/completions", json=body, timeout=120)
    assert r.headers["x-ragserve-release"] == "A"
    spans = otlp_receiver.wait_for(r.headers["x-trace-id"], {"rag.shadow"})
    (shadow,) = [s for s in spans if s.name == "rag.shadow"]
    assert shadow.attributes["release"] == "B"
    assert rg.traffic(graph, "traffic", "set", "A=100")[0] == 0


def test_worse_canary_loses_its_weight(graph: dict[str, Any]) -> None:
    code, _, err = rg.traffic(graph, "traffic", "set", "A=50", "C=50")
    assert code == 0, err
    body = {"prompt": "hello", "max_tokens": 1}
    with httpx.Client(base_url=graph["url"], timeout=120) as c:
        deadline = time.time() + 120
        while time.time() < deadline and rg.show(graph)["C"]["weight"] > 0:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: c.post("/v1/completions", json=body), range(8)))
    state = rg.show(graph)
    assert state["C"]["weight"] == 0 and state["A"]["weight"] == 100
    assert "p95" in (state["C"]["reason"] or ""), state["C"]
    code, out, _ = rg.traffic(graph, "traffic", "show")
    assert code == 0 and "weight taken away" in out
    ready = httpx.get(graph["url"] + "/ready", timeout=30).json()
    assert {r["name"]: r["reason"] for r in ready["releases"]}["C"]


def test_a_replaced_release_retires_after_its_grace_period(
    graph: dict[str, Any],
) -> None:
    """B and C (one retriever between them) lose their traffic: after the
    grace period that retriever scales to zero, the shared deployments stay,
    the graph stays ready, and `release restore` brings B back."""
    state = rg.show(graph)
    idle = [n for n in ("B", "C") if state[n]["state"] != "retired"]
    if idle:  # give them traffic, then take it: their grace periods start
        weights = [f"A={100 - 5 * len(idle)}", *(f"{n}=5" for n in idle)]
        code, _, err = rg.traffic(graph, "traffic", "set", *weights)
        # One may retire just now (its grace period from an earlier test):
        # then the change is refused whole, and it names why.
        assert code == 0 or "is retired" in err, err
        code, _, err = rg.traffic(graph, "traffic", "set", "A=100")
        assert code == 0, err
    before = httpx.get(graph["url"] + "/ready", timeout=30).json()["nodes"]
    rss_before = rg.replica_rss_mib(graph["proc"].pid)
    deadline = time.time() + 120
    while time.time() < deadline and rg.states(graph, "B", "C") != {"retired"}:
        time.sleep(1)
    assert rg.states(graph, "B", "C") == {"retired"}
    ready = httpx.get(graph["url"] + "/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    nodes = ready.json()["nodes"]
    parked = [n for n, s in nodes.items() if s == "parked"]
    assert len(parked) == 1 and parked[0].startswith("retriever"), nodes
    assert {n for n, s in nodes.items() if s == "ready"} == set(before) - set(parked)
    while time.time() < deadline and parked[0] in rg.replica_rss_mib(graph["proc"].pid):
        time.sleep(1)
    rss_after = rg.replica_rss_mib(graph["proc"].pid)
    assert parked[0] not in rss_after and set(rss_after) == set(rss_before) - {
        parked[0]
    }
    print(
        f"\n[retired B and C: {parked[0]} scaled to zero, "
        f"{rss_before[parked[0]]:.0f} MiB freed]"
    )
    # Retired: no weight, no pin, until restored.
    code, _, err = rg.traffic(graph, "traffic", "set", "A=50", "B=50")
    assert code == 2 and "release restore B" in err, err
    pinned = httpx.post(
        graph["url"] + "/v1/retrieve",
        json=RETRIEVE,
        headers={"x-ragserve-release": "B"},
        timeout=30,
    )
    assert pinned.status_code == 409, pinned.text
    assert pinned.json()["error"]["code"] == "release_retired"
    code, _, err = rg.traffic(graph, "release", "restore", "B")
    assert code == 0, err
    state = rg.show(graph)
    assert state["B"]["state"] == "warm" and state["C"]["state"] == "retired"
    assert parked[0] in rg.replica_rss_mib(graph["proc"].pid)
    code, _, err = rg.traffic(graph, "traffic", "set", "A=90", "B=10")
    assert code == 0, err
    r = httpx.post(
        graph["url"] + "/v1/retrieve",
        json=RETRIEVE,
        headers={"x-ragserve-release": "B"},
        timeout=60,
    )
    assert r.status_code == 200 and "Quillon" in r.text, r.text
    log = Path(graph["env"]["RAGSERVE_AUDIT_LOG"])
    deadline = time.time() + 10  # written off the request path
    while time.time() < deadline and '"release.restore"' not in log.read_text():
        time.sleep(0.2)
    audit = log.read_text()
    assert '"release.retire"' in audit and '"release.restore"' in audit


def test_sigterm_writes_out_every_audit_record(graph: dict[str, Any]) -> None:
    """Last in this module: it stops the graph, the way `kill PID` (or a pod's
    termination) does, and then reads what the audit log kept."""
    from tenants.audit import verify

    def one(i: int) -> str:
        r = httpx.post(
            graph["url"] + "/v1/retrieve",
            json=RETRIEVE,
            headers={"x-request-id": f"sigterm-{i}"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        # Named once (by Serve's proxy), with the id the client sent.
        assert r.headers.get_list("x-request-id") == [f"sigterm-{i}"]
        return f"sigterm-{i}"

    with ThreadPoolExecutor(4) as pool:
        sent = set(pool.map(one, range(40)))
    graph["proc"].send_signal(signal.SIGTERM)
    assert graph["proc"].wait(timeout=180) == 0
    log = Path(graph["env"]["RAGSERVE_AUDIT_LOG"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    written = {r.get("request_id") for r in records if r.get("kind") == "request"}
    assert sent <= written, sorted(sent - written)[:5]
    report = verify(log)
    assert report.ok, report
