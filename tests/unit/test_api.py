"""The HTTP layer alone (no Ray): envelope, SSE framing, auth, failures mid-stream.

Steps are small deterministic stand-ins so each failure can be placed exactly;
the real graph is exercised in tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from graph.api.app import ModelNames, ServingContext, create_app
from graph.config import RagServingArgs
from graph.pipeline import RagPipeline, Steps
from graph.prompts import get_template
from models.errors import PromptTooLongError
from models.generation import Chunk, GenerationRequest
from retrieval.types import Hit

SECRET = "db password is hunter2"


class Script:
    """What the stand-in generator does for the next request."""

    def __init__(self) -> None:
        self.fail_after: int | None = None
        self.fail_before = False
        self.seen: list[GenerationRequest] = []
        self.dense: list[list[float] | None] = []


def make_client(script: Script, api_keys: frozenset[str] = frozenset()) -> TestClient:
    hits = [
        Hit(
            0,
            "batching.md",
            "ragserve batches requests with ray.serve.batch",
            0.9,
            "Batching",
            0.9,
        ),
        Hit(1, "overview.md", "ragserve is a RAG serving graph", 0.5, None, 0.5),
    ]

    async def embed(texts: list[str]) -> np.ndarray:
        if any("explode" in t for t in texts):
            raise RuntimeError(SECRET)
        return np.ones((len(texts), 4), dtype=np.float32)

    async def retrieve(vectors: np.ndarray, k: int, *_: object) -> list[list[Hit]]:
        return [hits[:k] for _ in range(len(vectors))]

    async def rerank(
        query: str, passages: list[str], dense: list[float] | None = None
    ) -> list[float]:
        script.dense.append(dense)
        return [float(len(p)) for p in passages]

    async def generate(request: GenerationRequest) -> AsyncIterator[Chunk]:
        script.seen.append(request)
        if script.fail_before:
            raise PromptTooLongError(600, 16, 512)
        n = request.sampling.max_tokens
        for i in range(n):
            if script.fail_after is not None and i == script.fail_after:
                raise RuntimeError(SECRET)
            last = i == n - 1
            yield Chunk(
                text=f"t{i} ",
                finish_reason="length" if last else None,
                prompt_tokens=10 if last else 0,
                completion_tokens=n if last else 0,
            )

    async def embed_with_usage(texts: list[str]) -> tuple[np.ndarray, int]:
        return await embed(texts), 3 * len(texts)

    async def readiness() -> dict[str, str]:
        return {"embedder": "ready", "generator": "warming"}

    args = RagServingArgs()
    pipeline = RagPipeline(
        Steps(embed, retrieve, rerank, generate), get_template("rag-v1"), 1000
    )
    ctx = ServingContext(
        args=args,
        pipeline=pipeline,
        names=ModelNames("m", "e", "r", 512),
        embed_with_usage=embed_with_usage,
        readiness=readiness,
        api_keys=api_keys,
    )
    return TestClient(create_app(ctx), raise_server_exceptions=False)


@pytest.fixture
def script() -> Script:
    return Script()


def body(**kw):
    return {
        "messages": [{"role": "user", "content": "how are requests batched?"}],
        "max_tokens": 3,
        **kw,
    }


def events(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_sse_framing_citations_and_done(script: Script) -> None:
    r = make_client(script).post("/v1/chat/completions", json=body(stream=True))
    assert r.status_code == 200
    evs = events(r.text)
    assert evs[-1] == "[DONE]"
    assert evs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["doc_id"] for c in evs[0]["citations"]] == ["batching.md", "overview.md"]
    assert (
        "".join(e["choices"][0]["delta"].get("content", "") for e in evs[:-1])
        == "t0 t1 t2 "
    )
    assert [e["choices"][0]["finish_reason"] for e in evs[1:-1]] == [
        None,
        None,
        "length",
    ]


def test_context_reaches_the_prompt(script: Script) -> None:
    make_client(script).post("/v1/chat/completions", json=body())
    system = script.seen[0].messages[0]
    assert system["role"] == "system"
    assert "(batching.md) ragserve batches requests" in system["content"]
    assert script.seen[0].messages[-1]["content"] == "how are requests batched?"
    # The reranker is handed the retrieval scores, not left to re-embed.
    assert script.dense[0] is not None and script.dense[0][0] == 0.9


def test_error_mid_stream_is_a_final_sse_event_without_internals(
    script: Script,
) -> None:
    script.fail_after = 2
    r = make_client(script).post(
        "/v1/chat/completions", json=body(stream=True, max_tokens=5)
    )
    assert r.status_code == 200
    evs = events(r.text)
    assert evs[-1] == "[DONE]"
    err = evs[-2]["error"]
    assert err["type"] == "internal_server_error"
    assert SECRET not in r.text
    assert "t1" in json.dumps(evs)


def test_500_never_echoes_the_exception(script: Script, caplog) -> None:
    r = make_client(script).post(
        "/v1/chat/completions",
        json=body(messages=[{"role": "user", "content": "explode"}]),
        headers={"x-request-id": "req-42"},
    )
    assert r.status_code == 500
    assert SECRET not in r.text
    assert "req-42" in r.json()["error"]["message"]
    assert SECRET in caplog.text  # the operator still sees it, with the request id
    assert "req-42" in caplog.text


def test_prompt_too_long_before_stream_is_400(script: Script) -> None:
    script.fail_before = True
    r = make_client(script).post("/v1/chat/completions", json=body(stream=True))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert "512" in r.json()["error"]["message"]


def test_api_keys(script: Script) -> None:
    c = make_client(script, api_keys=frozenset({"k1"}))
    r = c.post("/v1/chat/completions", json=body())
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    ok = c.post(
        "/v1/chat/completions", json=body(), headers={"Authorization": "Bearer k1"}
    )
    assert ok.status_code == 200
    assert c.get("/health").status_code == 200  # probes need no key


def test_readiness_503_lists_waiting_nodes(script: Script) -> None:
    r = make_client(script).get("/ready")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert "generator (warming)" in r.json()["error"]["message"]


def test_include_usage_and_stop_list(script: Script) -> None:
    r = make_client(script).post(
        "/v1/chat/completions",
        json=body(stream=True, stream_options={"include_usage": True}, stop=["a", "b"]),
    )
    evs = events(r.text)
    assert evs[-2]["choices"] == []
    assert evs[-2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
    }
    assert script.seen[0].sampling.stop == ["a", "b"]


def test_stream_options_without_stream_is_400(script: Script) -> None:
    r = make_client(script).post(
        "/v1/chat/completions", json=body(stream_options={"include_usage": True})
    )
    assert r.status_code == 400


def test_context_that_overflows_is_trimmed_weakest_first(script: Script) -> None:
    client = make_client(script)
    steps = client.app.state.ctx.pipeline.steps
    original = steps.generate
    budget = {"chars": 10**9}

    async def generate(request: GenerationRequest):
        # An engine whose context window is counted in characters.
        size = sum(len(m["content"]) for m in request.messages)
        if size > budget["chars"]:
            raise PromptTooLongError(size, request.sampling.max_tokens, budget["chars"])
        async for chunk in original(request):
            yield chunk

    steps.generate = generate
    full = client.post("/v1/chat/completions", json=body()).json()
    assert len(full["citations"]) == 2
    budget["chars"] = sum(len(m["content"]) for m in script.seen[-1].messages) - 1
    r = client.post("/v1/chat/completions", json=body(stream=True))
    assert r.status_code == 200, r.text
    # The weakest chunk went; the citations say what the prompt really held.
    assert [c["doc_id"] for c in events(r.text)[0]["citations"]] == ["batching.md"]
    assert "overview.md" not in script.seen[-1].messages[0]["content"]
    # The conversation itself is never trimmed: too long even without context.
    budget["chars"] = 10
    r = client.post("/v1/chat/completions", json=body())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
