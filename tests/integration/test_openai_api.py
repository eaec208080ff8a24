"""The OpenAI-compatible endpoints of the real graph, over HTTP on loopback."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import numpy as np

QUESTION = "How does ragserve batch requests?"


def sse_events(response: httpx.Response) -> list[tuple[float, Any]]:
    """(arrival time, parsed data) for each SSE event, as the client saw them."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(
                (
                    time.perf_counter(),
                    payload if payload == "[DONE]" else json.loads(payload),
                )
            )
    return events


def test_models_lists_the_three_models(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    by_task = {m["task"]: m for m in body["data"]}
    assert by_task["generate"]["id"] == "tiny-llama"
    assert by_task["generate"]["max_model_len"] == 1024
    assert by_task["embed"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert by_task["rerank"]["id"].startswith("bm25+")


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["nodes"] == {
        "embedder": "ready",
        "retriever": "ready",
        "reranker": "ready",
        "generator": "ready",
    }


def test_streaming_chat_with_openai_client(openai_client) -> None:
    stream = openai_client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        max_tokens=24,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    citations = first.model_extra["citations"]
    assert citations and citations[0]["doc_id"].endswith(".md")
    assert any(c["doc_id"] == "batching.md" for c in citations)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 3
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.completion_tokens == 24
    assert usage.total_tokens == usage.prompt_tokens + 24


def test_stream_tokens_arrive_incrementally(client: httpx.Client) -> None:
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "max_tokens": 48,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1][1] == "[DONE]"
    deltas = [t for t, e in events[1:-1] if e["choices"][0]["delta"].get("content")]
    assert len(deltas) >= 10
    # Arrival times spread out as tokens are generated, not one burst at the end.
    assert deltas[-1] - deltas[0] > 0.05
    assert len({round(t, 3) for t in deltas}) > len(deltas) // 2


def test_non_streaming_chat_has_answer_usage_and_citations(
    client: httpx.Client,
) -> None:
    body = {
        "model": "tiny-llama",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 7,
        "rag": {"top_k": 6, "top_n": 2},
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["content"]
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 8
    assert len(out["citations"]) == 2
    assert r.headers["x-request-id"]
    # Same seed, temperature 0: the same answer again.
    again = client.post("/v1/chat/completions", json=body).json()
    assert (
        again["choices"][0]["message"]["content"]
        == out["choices"][0]["message"]["content"]
    )


def test_retrieval_can_be_turned_off(client: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 4,
        "rag": {"enabled": False},
    }
    out = client.post("/v1/chat/completions", json=body).json()
    assert out["citations"] == []
    with_rag = client.post("/v1/chat/completions", json={**body, "rag": {}}).json()
    # The retrieved context is in the prompt: many more prompt tokens.
    assert with_rag["usage"]["prompt_tokens"] > out["usage"]["prompt_tokens"] + 50


def test_completions_stream_and_not(openai_client) -> None:
    done = openai_client.completions.create(
        model="tiny-llama", prompt="Once upon a time", max_tokens=6
    )
    assert done.choices[0].text
    assert done.usage.completion_tokens == 6
    pieces = list(
        openai_client.completions.create(
            model="tiny-llama", prompt="Once upon a time", max_tokens=6, stream=True
        )
    )
    assert len(pieces) >= 2
    assert pieces[-1].choices[0].finish_reason == "length"


def test_embeddings_float_and_base64(openai_client) -> None:
    texts = ["How does ragserve batch requests?", "FAISS finds nearest neighbours."]
    floats = openai_client.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2", input=texts
    )
    assert [d.index for d in floats.data] == [0, 1]
    vec = np.array(floats.data[0].embedding)
    assert vec.shape == (384,)
    assert abs(np.linalg.norm(vec) - 1.0) < 1e-4
    assert floats.usage.prompt_tokens > 8
    raw = openai_client.embeddings.with_raw_response.create(
        model="sentence-transformers/all-MiniLM-L6-v2",
        input=texts[0],
        encoding_format="base64",
    ).http_response.json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, vec, atol=1e-6)


def test_rerank_orders_documents(client: httpx.Client) -> None:
    docs = [
        "The bread dough rests for hours before baking.",
        "ragserve batches concurrent embedding requests with ray.serve.batch.",
        {"text": "Kyoto and Lisbon are cities."},
    ]
    r = client.post(
        "/v1/rerank", json={"query": QUESTION, "documents": docs, "top_n": 2}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    assert results[0]["index"] == 1
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"]["text"].startswith("ragserve batches")
    bare = client.post(
        "/v1/rerank",
        json={"query": QUESTION, "documents": docs, "return_documents": False},
    ).json()
    assert len(bare["results"]) == 3 and bare["results"][0].get("document") is None


def test_retrieve_returns_relevant_chunks(client: httpx.Client) -> None:
    r = client.post("/v1/retrieve", json={"query": QUESTION, "top_k": 5})
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 5
    assert data[0]["doc_id"] == "batching.md"
    assert [d["score"] for d in data] == sorted(
        (d["score"] for d in data), reverse=True
    )
    reranked = client.post(
        "/v1/retrieve", json={"query": QUESTION, "top_k": 8, "rerank": True, "top_n": 2}
    ).json()["data"]
    assert len(reranked) == 2


def test_long_question_keeps_what_context_fits(client: httpx.Client) -> None:
    """~700 question tokens + 3 chunks overflow the 1024-token window; the
    weakest chunks are dropped instead of failing the request."""
    question = "Explain batching. " + "word " * 700
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 4}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["citations"]) < 3
    assert out["usage"]["prompt_tokens"] + 4 <= 1024
