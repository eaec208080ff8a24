"""Tenants against a real Ray Serve graph with TWO ingress replicas (an app of
their own over the session graph's steps): limits exact across replicas (not 2x), the
openai client's RateLimitError, tokens counted, feedback joined to its
completion, revocation on every replica within a second, counters surviving
an ingress restart, the audit log of the whole run verifying, an ingress
replica's death under load, and a daily quota and rpm surviving the ledger's
death."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph.cli import main
from tenants.audit import query, verify
from tenants.records import Limits
from tenants.store import TenantStore
from tests.integration.conftest import graph_args

APP = "tenants"
WINDOW_S = 10.0  # the rpm window, shortened; load_tests/ shows a real minute


@pytest.fixture(scope="module")
def tgraph(
    serve_graph: dict[str, Any],
    docs_index: Path,
    tiny_llama: Path,
    tmp_path_factory: pytest.TempPathFactory,
    otlp_receiver: Any,
) -> Iterator[dict[str, Any]]:
    """Two ingress replicas of their own app, with a tenant store, in front of
    the session graph's step deployments (no second set of models)."""
    from ray import serve

    from graph.builder import _plain
    from graph.config import RagServingArgs
    from graph.ingress import IngressDeployment
    from graph.served import load_served
    from graph.server import APP_NAME
    from releases.traffic import TrafficState

    NODES = ("embedder", "retriever", "reranker", "generator")

    tmp = tmp_path_factory.mktemp("tenants")
    port = serve_graph["args"].server.port
    raw = graph_args(docs_index, tiny_llama, port, otlp_receiver.endpoint)
    raw["tenants"] = {
        "db": f"sqlite:///{tmp / 'tenants.db'}",
        "audit_log": str(tmp / "audit.jsonl"),
        "window_s": WINDOW_S,
        "refresh_s": 0.25,
    }
    args = RagServingArgs.load(raw)
    served = load_served(args)
    routes = {
        r.name: {n: serve.get_deployment_handle(n, app_name=APP_NAME) for n in NODES}
        for r in served
    }
    traffic = TrafficState.initial([r.name for r in served])
    ingress = IngressDeployment.options(  # type: ignore[attr-defined]
        name="ingress",
        num_replicas=2,
        ray_actor_options={"num_cpus": 0.01},
        user_config=traffic.model_dump(mode="json"),
    )
    serve.run(
        ingress.bind(routes, args, _plain(served)),
        name=APP,
        route_prefix=f"/{APP}",
        blocking=False,
    )
    url = serve_graph["url"] + f"/{APP}"
    deadline = time.time() + 300
    with httpx.Client(base_url=url, timeout=30) as c:
        while c.get("/ready").status_code != 200:
            assert time.time() < deadline, "tenant ingress not ready in 300 s"
            time.sleep(1)
    store = TenantStore(raw["tenants"]["db"])
    try:
        yield {"url": url, "store": store, "audit": tmp / "audit.jsonl", "tmp": tmp}
    finally:
        serve.delete(APP)
        store.close()


def _add(tg: dict[str, Any], name: str, **limits: int) -> str:
    _, key = tg["store"].add(name, Limits(**limits))
    time.sleep(1.0)  # every replica re-reads the store within refresh_s
    return key


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_rpm_exact_across_two_replicas(tgraph: dict[str, Any]) -> None:
    key = _add(tgraph, "rpm-tenant", rpm=10)
    t0 = time.time()
    sent: list[tuple[float, int, dict[str, str]]] = []

    def one(i: int) -> None:
        time.sleep(max(0.0, t0 + i * 0.2 - time.time()))  # 5 requests/s
        at = time.time()
        r = httpx.get(tgraph["url"] + "/v1/models", headers=_h(key), timeout=30)
        sent.append((at, r.status_code, dict(r.headers)))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(100)))  # 20 s: two windows
    ok = sorted(at for at, status, _ in sent if status == 200)
    refused = [h for _, status, h in sent if status == 429]
    assert {s for _, s, _ in sent} == {200, 429}
    # never more than the limit in any window (+2 for client/server skew)
    worst = max(sum(1 for x in ok if a <= x < a + WINDOW_S) for a in ok)
    assert worst <= 12, worst
    assert len(ok) >= 18  # ...yet the limit is used: about 10 per window
    for h in refused:
        assert int(h["retry-after"]) >= 1
        assert h["x-ratelimit-limit-requests"] == "10"
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-requests" in h
    # both ingress replicas took part (each records its id in the audit log)
    time.sleep(1)
    replicas = {r["replica"] for r in query(tgraph["audit"], tenant="rpm-tenant")}
    assert len(replicas) == 2, replicas


def test_openai_client_raises_rate_limit_error(tgraph: dict[str, Any]) -> None:
    import openai

    key = _add(tgraph, "oa-tenant", rpm=2)
    client = openai.OpenAI(base_url=tgraph["url"] + "/v1", api_key=key, max_retries=0)
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as info:
        client.models.list()
    err = info.value
    assert err.code == "rate_limit_exceeded"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(err.response.headers["retry-after"]) >= 1
    bad = openai.OpenAI(base_url=tgraph["url"] + "/v1", api_key="rs-no", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.models.list()
    assert auth.value.code == "invalid_api_key"


def test_tokens_counted_and_feedback(tgraph: dict[str, Any]) -> None:
    import openai

    key = _add(tgraph, "fb-tenant", tpm=100_000)
    other = _add(tgraph, "fb-other")
    client = openai.OpenAI(base_url=tgraph["url"] + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "How does ragserve batch requests?"}],
        max_tokens=8,
    )
    done = raw.parse()
    used = done.usage.prompt_tokens + done.usage.completion_tokens
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 100_000  # before
    nxt = httpx.get(tgraph["url"] + "/v1/models", headers=_h(key), timeout=30)
    assert int(nxt.headers["x-ratelimit-remaining-tokens"]) == 100_000 - used
    fb = tgraph["url"] + "/v1/feedback"
    r = httpx.post(fb, json={"id": done.id, "rating": -1}, headers=_h(key))
    assert r.status_code == 200, r.text
    assert r.json()["release"] == "default" and r.json()["trace_id"] is not None
    assert tgraph["store"].feedback_counts("default") == {-1: 1}
    for body, who in (
        ({"id": "chatcmpl-unknown", "rating": 1}, key),
        ({"id": done.id, "rating": 1}, other),  # someone else's completion
    ):
        r = httpx.post(fb, json=body, headers=_h(who))
        assert r.status_code == 404 and r.json()["error"]["code"]
    r = httpx.post(fb, json={"id": done.id, "rating": 7}, headers=_h(key))
    assert r.status_code == 400 and "rating" in r.json()["error"]["param"]
    assert tgraph["store"].feedback_counts() == {-1: 1}


def test_revoked_key_refused_on_every_replica_within_a_second(
    tgraph: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    key = _add(tgraph, "gone-tenant")
    url = tgraph["url"] + "/v1/models"
    assert all(
        httpx.get(url, headers=_h(key), timeout=30).status_code == 200 for _ in range(4)
    )
    db = ["--tenants-db", tgraph["store"].url, "--audit-log", str(tgraph["audit"])]
    assert main(["tenant", "revoke", "gone-tenant", *db]) == 0
    revoked_at = time.time()
    late: list[tuple[float, int]] = []
    with httpx.Client(timeout=30) as c:
        while time.time() < revoked_at + 3.0:
            at = time.time()
            late.append((at - revoked_at, c.get(url, headers=_h(key)).status_code))
    after_1s = [status for dt, status in late if dt >= 1.0]
    assert len(after_1s) >= 4 and set(after_1s) == {401}, late
    time.sleep(1)
    refusals = [
        r["replica"]
        for r in query(tgraph["audit"], status=401)
        if r["route"] == "/v1/models"
    ]
    assert len(set(refusals)) == 2  # both replicas refused it


def test_counters_survive_an_ingress_restart(tgraph: dict[str, Any]) -> None:
    import ray

    key = _add(tgraph, "quota-tenant", daily_tokens=1)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    chat = tgraph["url"] + "/v1/chat/completions"
    assert httpx.post(chat, json=body, headers=_h(key), timeout=120).status_code == 200
    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if f"{APP}#ingress" in a["name"]
    ]
    assert len(replicas) == 2, replicas
    for a in replicas:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
    deadline = time.time() + 120
    status = None
    while time.time() < deadline:
        try:
            r = httpx.post(chat, json=body, headers=_h(key), timeout=60)
            status = r.status_code
            if status == 429:
                break
        except httpx.TransportError:
            pass
        time.sleep(1)
    assert status == 429
    assert r.json()["error"]["code"] == "insufficient_quota"


def test_audit_log_of_the_run_verifies_and_names_tampering(
    tgraph: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    time.sleep(1)  # the replicas' writers flush every 50 ms
    path = tgraph["audit"]
    verdict = verify(path)
    assert verdict.ok, verdict.problem
    assert verdict.records > 100
    assert main(["audit", "verify", "--audit-log", str(path)]) == 0
    assert "chain intact" in capsys.readouterr().out
    copy = tgraph["tmp"] / "copy.jsonl"
    shutil.copy(path, copy)
    lines = copy.read_text().splitlines()
    record = json.loads(lines[10])
    record["status"] = 200 if record.get("status") != 200 else 201
    edited = [*lines[:10], json.dumps(record, separators=(",", ":")), *lines[11:]]
    copy.write_text("\n".join(edited) + "\n")
    assert main(["audit", "verify", "--audit-log", str(copy)]) == 2
    assert "record 11 (line 11) was edited" in capsys.readouterr().err
    copy.write_text("\n".join(lines[:20] + lines[21:]) + "\n")
    assert main(["audit", "verify", "--audit-log", str(copy)]) == 2
    assert "record 21 deleted" in capsys.readouterr().err


def test_tenant_names_its_trace_and_series_never_its_key(
    tgraph: dict[str, Any], otlp_receiver: Any
) -> None:
    from tests.integration.test_metrics import scrape

    key = _add(tgraph, "obs-tenant")
    body = {"messages": [{"role": "user", "content": "What is RAG?"}], "max_tokens": 2}
    r = httpx.post(
        tgraph["url"] + "/v1/chat/completions", json=body, headers=_h(key), timeout=120
    )
    assert r.status_code == 200, r.text
    spans = otlp_receiver.wait_for(r.headers["x-trace-id"], {"rag.request"})
    (root,) = [s for s in spans if s.name == "rag.request"]
    assert root.attributes["tenant"] == "obs-tenant"
    assert all(key not in json.dumps(dict(s.attributes), default=str) for s in spans)
    wanted = (
        "ragserve_tenant_requests_total{",
        'tenant="obs-tenant"',
        "ragserve_tenant_request_latency_ms_bucket{",
        "ragserve_tenant_tokens_total{",
    )
    deadline = time.time() + 60  # Ray's metrics agent exports on a period
    text = ""
    while time.time() < deadline and not all(w in text for w in wanted):
        time.sleep(2)
        text = scrape()
    missing = [w for w in wanted if w not in text]
    assert not missing, missing
    assert key not in text


def test_an_ingress_replica_killed_under_load_loses_only_its_own_requests(
    tgraph: dict[str, Any],
) -> None:
    """SIGKILL of one of two ingress replicas under a 4-client load: the
    requests it was serving end at once (Serve's proxy answers them; nothing
    hangs), every request that starts after the kill is a 200 from the other
    replica, and Serve starts a replacement."""
    from tests.integration.faults_util import CHAT, replicas, send, wait_replaced

    key = _add(tgraph, "ha-tenant")
    before = replicas("ingress", app=APP)
    assert len(before) == 2, before
    seen: list[tuple[float, float, int, str]] = []  # start, end, status, detail
    killed_at = float("inf")
    stop = time.time() + 600

    def client(n: int) -> None:
        msgs = [{"role": "user", "content": "What is RAG?"}]
        with httpx.Client(base_url=tgraph["url"], headers=_h(key), timeout=120) as c:
            i = 0
            while time.time() < min(stop, killed_at + 8):
                i += 1
                started = time.time()
                body = {"messages": msgs, "max_tokens": 8, "stream": i % 2 == 0}
                o = send(c, "POST", CHAT, json=body)
                ok = o.status == 200 and o.stream_error is None and o.done
                seen.append((started, time.time(), 200 if ok else o.status, o.detail))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, n) for n in range(4)]
        while sum(1 for s in seen if s[2] == 200) < 8:
            assert time.time() < stop, seen
            time.sleep(0.2)
        killed_at = time.time()
        os.kill(before[0]["pid"], signal.SIGKILL)
        for f in futures:
            f.result()
    lost = [s for s in seen if s[2] != 200]
    # only what was in flight when the replica died: started before, ended soon
    assert len(lost) <= 4, lost
    for started, ended, _, _ in lost:
        assert started < killed_at + 0.5 and ended < killed_at + 5, (killed_at, lost)
    after = [s for s in seen if s[0] > killed_at + 0.5]
    assert len(after) >= 8 and all(s[2] == 200 for s in after), after
    print(
        f"[ingress replica killed: {len(seen)} requests, lost "
        f"{[(s[2], round(s[1] - killed_at, 2), s[3][:60]) for s in lost]}, "
        f"{len(after)} after it all 200]"
    )
    wait_replaced("ingress", {r["replica_id"] for r in before}, 120, app=APP)


def test_quota_and_rpm_survive_the_ledgers_death(tgraph: dict[str, Any]) -> None:
    """The ledger actor killed (Ray restarts it): today's token counts and
    this window's requests come back from the tenant database, so a spent
    quota stays spent and a tenant at its rpm stays there."""
    import ray

    from graph.ledger_actor import ACTOR_NAME, NAMESPACE

    key = _add(tgraph, "ledger-quota-tenant", daily_tokens=1)
    rpm_key = _add(tgraph, "ledger-rpm-tenant", rpm=2)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    chat, models = tgraph["url"] + "/v1/chat/completions", tgraph["url"] + "/v1/models"
    assert httpx.post(chat, json=body, headers=_h(key), timeout=120).status_code == 200
    first = time.time()
    for _ in range(2):
        assert httpx.get(models, headers=_h(rpm_key), timeout=30).status_code == 200
    time.sleep(1.5)  # the ledger writes its counts every second
    ledger = ray.get_actor(f"{ACTOR_NAME}-{APP}", namespace=NAMESPACE)
    pid = ray.get(ledger.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(ledger, no_restart=False)
    deadline = time.time() + 120
    seen: list[int] = []
    while time.time() < deadline:
        r = httpx.get(models, headers=_h(rpm_key), timeout=30)
        seen.append(r.status_code)
        if r.status_code in (200, 429):
            break
        time.sleep(0.2)  # refused while the ledger restarts
    # a fresh ledger must not admit a third request inside the window
    assert r.status_code == 429 or time.time() - first > WINDOW_S, seen
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    seen = []
    while time.time() < deadline:
        r = httpx.post(chat, json=body, headers=_h(key), timeout=60)
        seen.append(r.status_code)
        if r.status_code == 429:
            break
        assert r.status_code != 200, seen  # a fresh ledger must not admit it
        time.sleep(1)
    assert seen[-1] == 429, seen
    assert r.json()["error"]["code"] == "insufficient_quota"
    restarted = ray.get(ledger.__ray_call__.remote(lambda self: os.getpid()))
    assert restarted != pid  # a new process answered
