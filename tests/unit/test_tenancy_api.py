"""The tenant gate over the real HTTP app (no Ray): keys (Bearer and api-key),
401/429 envelopes with OpenAI's rate-limit headers, tokens charged from the
stream, releases allow-list, feedback, audit records, open mode."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from graph.api.app import ModelNames, ServingContext, create_app
from graph.config import RagServingArgs
from graph.gate.ledger_actor import LocalLedger
from graph.gate.tenancy import TenantGate
from graph.pipeline import RagPipeline, Steps
from graph.prompts import get_template
from models.generation import Chunk, GenerationRequest
from retrieval.types import Hit
from tenants.audit import query, verify
from tenants.ledger import Ledger
from tenants.records import Limits
from tenants.store import TenantStore


async def _embed(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 4), dtype=np.float32)


async def _retrieve(vectors: np.ndarray, k: int, *_: object) -> list[list[Hit]]:
    return [[Hit(0, "a.md", "ragserve batches requests", 0.9, None)]]


async def _rerank(
    query: str, passages: list[str], dense: list[float] | None = None
) -> list[float]:
    return [1.0 for _ in passages]


async def _generate(request: GenerationRequest) -> AsyncIterator[Chunk]:
    n = request.sampling.max_tokens
    for i in range(n):
        yield Chunk(text=f"t{i} ")
    yield Chunk(text="", finish_reason="length", prompt_tokens=30, completion_tokens=n)


class Graph:
    def __init__(self, tmp: Path, window_s: float = 60.0, root_path: str = "") -> None:
        self.db = f"sqlite:///{tmp / 't.db'}"
        self.audit = tmp / "audit.jsonl"
        self.store = TenantStore(self.db)
        args = RagServingArgs.load(
            {
                "tenants": {
                    "db": self.db,
                    "audit_log": str(self.audit),
                    "window_s": window_s,
                    "refresh_s": 0.05,
                }
            }
        )
        self.ledger = Ledger(window_s=window_s, slots=2)
        self.gate = TenantGate(args, LocalLedger(self.ledger))
        pipeline = RagPipeline(
            Steps(_embed, _retrieve, _rerank, self.gate.meter(_generate)),
            get_template("rag-v1"),
            1000,
        )

        async def embed_with_usage(texts: list[str]) -> tuple[np.ndarray, int]:
            return await _embed(texts), 5 * len(texts)

        async def readiness() -> dict[str, str]:
            return {"generator": "ready"}

        ctx = ServingContext(
            args=args,
            pipeline=pipeline,
            names=ModelNames("m", "e", "r", 512),
            embed_with_usage=self.gate.meter_embed(embed_with_usage),
            readiness=readiness,
            gate=self.gate,
        )
        self.client = TestClient(
            create_app(ctx), raise_server_exceptions=False, root_path=root_path
        )

    def add(self, name: str, **limits: int) -> str:
        _, key = self.store.add(name, Limits(**limits))
        self.gate.directory.refresh()
        return key

    def chat(self, key: str | None, **extra: object) -> object:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        return self.client.post(
            "/v1/chat/completions", json={**body, **extra}, headers=headers
        )

    def records(self) -> list[dict]:
        self.gate.audit.flush()
        return list(query(self.audit))


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[Graph]:
    g = Graph(tmp_path)
    yield g
    g.gate.close()


def test_open_until_a_tenant_exists(graph: Graph) -> None:
    assert graph.chat(None).status_code == 200
    assert graph.chat("unused").status_code == 200  # the openai client's placeholder
    key = graph.add("acme")
    r = graph.chat(None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert graph.chat("rs-wrong").status_code == 401
    assert graph.chat(key).status_code == 200
    r = graph.client.post(
        "/v1/embeddings", json={"input": "x", "model": "e"}, headers={"api-key": key}
    )
    assert r.status_code == 200
    assert graph.client.get("/health").status_code == 200
    assert graph.client.get("/ready").status_code == 200


def test_rpm_429_with_headers_and_retry_after(graph: Graph) -> None:
    key = graph.add("acme", rpm=2)
    first = graph.chat(key)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert graph.chat(key).status_code == 200
    r = graph.chat(key)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_counted_from_the_stream(graph: Graph) -> None:
    key = graph.add("acme", tpm=100, daily_tokens=1000)
    r = graph.chat(key, stream=True)
    assert r.status_code == 200 and "[DONE]" in r.text
    usage = graph.ledger.usage("acme")
    assert usage["tokens"] == 30 + 8 and usage["active"] == 0
    r = graph.chat(key, max_tokens=60)
    assert r.json()["usage"]["completion_tokens"] == 60
    r = graph.chat(key)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    (rec,) = [x for x in graph.records() if x.get("status") == 200][-1:]
    assert rec["tenant"] == "acme" and rec["completion_tokens"] == 60
    assert rec["prompt_tokens"] == 30


def test_daily_quota_is_insufficient_quota(graph: Graph) -> None:
    key = graph.add("acme", daily_tokens=20)
    assert graph.chat(key).status_code == 200
    r = graph.chat(key)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "insufficient_quota"


def test_revoked_key_is_refused(graph: Graph) -> None:
    key = graph.add("acme")
    assert graph.chat(key).status_code == 200
    graph.store.revoke("acme")
    time.sleep(0.3)  # the directory polls every 50 ms here
    assert graph.chat(key).status_code == 401


def test_admin_routes_refuse_a_tenants_key(graph: Graph) -> None:
    key = graph.add("acme")
    r = graph.client.get("/admin/traffic", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "permission_denied"
    assert graph.client.get("/admin/traffic").status_code == 401
    graph.gate.static_keys = frozenset({"operator-key"})
    r = graph.client.get(
        "/admin/traffic", headers={"Authorization": "Bearer operator-key"}
    )
    assert r.status_code == 404  # allowed through; this test graph routes no releases
    assert r.json()["error"]["code"] == "no_releases"


def test_release_not_allowed_is_404(graph: Graph) -> None:
    _, key = graph.store.add("acme", Limits(), releases=("stable",))
    graph.gate.directory.refresh()
    r = graph.chat(key, model=None)
    assert r.status_code == 200
    r = graph.client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}", "x-ragserve-release": "canary"},
    )
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]


def test_feedback_on_own_completion_only(graph: Graph) -> None:
    a, b = graph.add("a"), graph.add("b")
    done = graph.chat(a).json()  # its owner is recorded off the request path

    def rate(key: str, body: dict) -> object:
        return graph.client.post(
            "/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}
        )

    r = rate(a, {"id": done["id"], "rating": -1, "comment": "off"})
    assert r.status_code == 200, r.text
    assert r.json()["release"] == "default"
    assert rate(b, {"id": done["id"], "rating": 1}).status_code == 404
    assert rate(a, {"id": "chatcmpl-nope", "rating": 1}).status_code == 404
    bad = rate(a, {"id": done["id"], "rating": 7})
    assert bad.status_code == 400 and "rating" in bad.json()["error"]["message"]
    assert graph.store.feedback_counts() == {-1: 1}
    nul = rate(a, {"id": done["id"], "rating": 1, "comment": "ok\x00then"})
    assert nul.status_code == 200, nul.text
    assert graph.store.feedback_comments(done["id"]) == ["off", "ok\x00then"]
    lone = graph.client.post(
        "/v1/feedback",
        content=f'{{"id": "{done["id"]}", "rating": 1, "comment": "\\ud800"}}',
        headers={"Authorization": f"Bearer {a}", "content-type": "application/json"},
    )
    assert lone.status_code == 400 and lone.json()["error"]["param"] == "comment"


def test_every_request_is_audited_without_content(graph: Graph) -> None:
    key = graph.add("acme", rpm=1)
    graph.chat(key)
    graph.chat(key)
    graph.chat("rs-bad")
    records = graph.records()
    assert [r["status"] for r in records] == [200, 429, 401]
    assert records[0]["tenant"] == "acme" and records[2]["tenant"] is None
    assert records[0]["completion_id"].startswith("chatcmpl-")
    assert "hi" not in json.dumps(records)  # no prompt, no answer
    assert key not in graph.audit.read_text()
    assert verify(graph.audit).ok


def test_gated_under_a_route_prefix(tmp_path: Path) -> None:
    g = Graph(tmp_path, root_path="/tenants")  # as Serve mounts an app at /tenants
    try:
        key = g.add("acme", rpm=1)
        assert g.chat(None).status_code == 401
        assert g.chat(key).status_code == 200
        assert g.chat(key).status_code == 429
        assert g.client.get("/health").status_code == 200
        assert g.client.get("/nope", headers={}).status_code == 401
        assert g.records()[0]["route"] == "/v1/chat/completions"
    finally:
        g.gate.close()
