"""One trace per request through the real graph, received over real OTLP/HTTP."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from tests.otlp_receiver import OTLPReceiver, ReceivedSpan

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

STEP_SPANS = {"rag.request", "rag.embed", "rag.retrieve", "rag.rerank", "rag.generate"}
WAIT_SPANS = {"queue.handle", "queue.batch", "queue.engine"}
NODES = {
    "rag.embed": "embedder",
    "rag.retrieve": "retriever",
    "rag.rerank": "reranker",
    "rag.generate": "generator",
}


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def test_streaming_chat_is_one_trace_with_every_hop(
    serve_graph: dict[str, Any], otlp_receiver: OTLPReceiver
) -> None:
    body = {
        "messages": [{"role": "user", "content": "How does ragserve batch requests?"}],
        "stream": True,
        "max_tokens": 12,
    }
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    with (
        httpx.Client(base_url=serve_graph["url"], timeout=120) as c,
        c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        # The header names the trace before the first token arrives.
        assert r.headers["x-trace-id"] == CLIENT_TRACE
        assert "[DONE]" in r.read().decode()

    spans = otlp_receiver.wait_for(
        CLIENT_TRACE, STEP_SPANS | WAIT_SPANS | {"llm_request"}
    )
    names = {s.name for s in spans}
    assert names >= STEP_SPANS, names
    assert names >= WAIT_SPANS, names
    # vLLM's own span joined the same trace through trace_headers.
    assert "llm_request" in names, names

    ids = {s.span_id: s for s in spans}
    (root,) = by_name(spans, "rag.request")
    assert root.parent_span_id == CLIENT_SPAN  # continues the client's trace
    for step in ("rag.embed", "rag.retrieve", "rag.rerank", "rag.generate"):
        (span,) = by_name(spans, step)
        assert span.parent_span_id == root.span_id, step
        assert span.attributes["deployment"] == NODES[step]
        assert span.attributes["replica.id"]
        # Every hop waited in the handle queue, drawn as a child span.
        assert any(
            w.name == "queue.handle" and w.parent_span_id == span.span_id for w in spans
        ), step
        # No CUDA here: GPU attributes are absent, never fake zeros.
        assert not any(k.startswith("gpu.") for k in span.attributes)
    for step in ("rag.embed", "rag.retrieve", "rag.rerank"):
        (span,) = by_name(spans, step)
        assert span.attributes["batch.size"] >= 1
        assert span.attributes["batch.wait_ms"] >= 0
        (batch,) = [
            w for w in by_name(spans, "queue.batch") if w.parent_span_id == span.span_id
        ]
        assert batch.attributes["batch.size"] == span.attributes["batch.size"]
    (gen,) = by_name(spans, "rag.generate")
    assert gen.attributes["llm.completion_tokens"] == 12
    assert gen.attributes["llm.prompt_tokens"] > 50
    assert gen.attributes["llm.ttft_ms"] > 0
    assert 0.0 <= gen.attributes["llm.kv_cache_usage"] <= 1.0
    (engine_wait,) = by_name(spans, "queue.engine")
    assert engine_wait.parent_span_id == gen.span_id
    (llm,) = by_name(spans, "llm_request")
    assert llm.parent_span_id == gen.span_id
    # Children sit inside their parents' time (same host clock).
    for span in spans:
        parent = ids.get(span.parent_span_id or "")
        if parent is not None and span.name != "llm_request":
            assert (
                parent.start_ns
                <= span.start_ns
                <= span.end_ns
                <= parent.end_ns + 1_000_000
            ), span.name

    out = os.environ.get("RAGSERVE_TRACE_SAMPLE")
    if out:  # a real example trace, for the docs and the closing note
        rows = [
            {
                "name": s.name,
                "span_id": s.span_id,
                "parent": s.parent_span_id,
                "ms": round(s.duration_ms, 3),
                "attributes": s.attributes,
            }
            for s in sorted(spans, key=lambda s: s.start_ns)
        ]
        with open(out, "w") as f:
            json.dump(
                {"trace_id": CLIENT_TRACE, "spans": rows}, f, indent=1, default=str
            )


def test_trace_id_header_without_client_context(serve_graph: dict[str, Any]) -> None:
    with httpx.Client(base_url=serve_graph["url"], timeout=60) as c:
        r = c.post("/v1/embeddings", json={"input": "hello"})
        other = c.post("/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 200
    assert len(r.headers["x-trace-id"]) == 32
    assert r.headers["x-trace-id"] != other.headers["x-trace-id"]
