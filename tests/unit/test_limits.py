"""Limits from config, answered before any step runs (no Ray).

The stand-in steps of `tests.unit.test_api` record every generation request;
an embedder that counts its calls shows that refused requests cost no model
work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from graph.config import ConfigError, RagServingArgs
from tests.unit.test_api import Script, body, make_client

CHAT = "/v1/chat/completions"
SMALL = {
    "max_messages": 3,
    "max_text_chars": 50,
    "max_total_chars": 120,
    "max_embedding_inputs": 4,
    "max_rerank_documents": 3,
    "max_top_k": 5,
}


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def client(script: Script) -> Iterator[Any]:
    c = make_client(script)
    ctx = c.app.state.ctx
    ctx.args = RagServingArgs.load({"limits": SMALL})
    calls: list[list[str]] = []
    embed = ctx.pipeline.steps.embed

    async def counted_embed(texts: list[str]) -> Any:
        calls.append(texts)
        return await embed(texts)

    ctx.pipeline.steps.embed = counted_embed
    c.embed_calls = calls
    yield c


def refused(r: Any, param: str, key: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["code"] == "limit_exceeded"
    assert f"limits.{key}" in err["message"]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.mark.parametrize(
    ("path", "payload", "param", "key"),
    [
        (CHAT, body(messages=[user("hi")] * 4), "messages", "max_messages"),
        (CHAT, body(messages=[user("x" * 51)]), "messages.0.content", "max_text_chars"),
        (CHAT, body(messages=[user("x" * 50)] * 3), "messages", "max_total_chars"),
        (
            CHAT,
            body(
                messages=[
                    {"role": "user", "content": [{"type": "text", "text": "y" * 60}]}
                ]
            ),
            "messages.0.content",
            "max_text_chars",
        ),
        (CHAT, body(stop=["s" * 51]), "stop.0", "max_text_chars"),
        (CHAT, body(rag={"top_k": 6}), "rag.top_k", "max_top_k"),
        ("/v1/completions", {"prompt": "p" * 51}, "prompt", "max_text_chars"),
        ("/v1/embeddings", {"input": ["a"] * 5}, "input", "max_embedding_inputs"),
        ("/v1/embeddings", {"input": "a" * 51}, "input", "max_text_chars"),
        ("/v1/embeddings", {"input": ["a" * 40] * 4}, "input", "max_total_chars"),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["d"] * 4},
            "documents",
            "max_rerank_documents",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["d", {"text": "e" * 51}]},
            "documents.1",
            "max_text_chars",
        ),
        ("/v1/retrieve", {"query": "q", "top_k": 6}, "top_k", "max_top_k"),
        ("/v1/retrieve", {"query": "q" * 51}, "query", "max_text_chars"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_each_limit_is_a_400_naming_field_and_limit_before_model_work(
    client: Any, script: Script, path: str, payload: dict, param: str, key: str
) -> None:
    refused(client.post(path, json=payload), param, key)
    assert script.seen == []
    assert client.embed_calls == []


@pytest.mark.parametrize(
    ("path", "payload", "param", "key"),
    [
        (
            CHAT,
            body(messages=[user("hi")] * 3 + [{"role": "robot"}]),
            "messages",
            "max_messages",
        ),
        ("/v1/embeddings", {"input": ["a"] * 4 + [7]}, "input", "max_embedding_inputs"),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["d"] * 3 + [{}]},
            "documents",
            "max_rerank_documents",
        ),
    ],
    ids=["messages", "inputs", "documents"],
)
def test_a_count_is_refused_before_any_item_is_validated(
    client: Any, path: str, payload: dict, param: str, key: str
) -> None:
    # One item too many, and that item is invalid: the count answers, so the
    # items were never built (20,000 messages cost no 20,000 models).
    r = client.post(path, json=payload)
    refused(r, param, key)
    assert "items; at most" in r.json()["error"]["message"]


def test_requests_within_the_limits_are_served(client: Any, script: Script) -> None:
    r = client.post(CHAT, json=body(messages=[user("x" * 50), user("y" * 50)]))
    assert r.status_code == 200, r.text
    assert client.post("/v1/embeddings", json={"input": ["a"] * 4}).status_code == 200
    r = client.post("/v1/retrieve", json={"query": "q", "top_k": 5, "top_n": 9})
    assert r.status_code == 200  # top_n above top_k keeps all top_k
    assert len(r.json()["data"]) == 2  # the stand-in index holds two chunks


def test_max_tokens_at_the_context_length_is_a_400(client: Any, script: Script) -> None:
    # The stand-in model's context is 512 tokens, which also hold the prompt.
    for field in ("max_tokens", "max_completion_tokens"):
        r = client.post(CHAT, json=body(**{field: 512}))
        assert r.status_code == 400
        assert r.json()["error"]["param"] == field
    assert (
        client.post("/v1/completions", json={"prompt": "p", "max_tokens": 600}).json()[
            "error"
        ]["param"]
        == "max_tokens"
    )
    assert script.seen == []


def test_a_10_mb_body_is_413_without_being_read(script: Script) -> None:
    c = make_client(script)
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 10_000_000 + b'"}]}'
    r = c.post(CHAT, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "request_too_large"
    assert "2097152" in err["message"]
    assert r.headers["x-request-id"]  # still inside the request context
    assert script.seen == []


def test_a_chunked_body_is_cut_off_at_the_limit(script: Script) -> None:
    c = make_client(script)
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(100):  # 100 x 64 KiB = 6.4 MB, no Content-Length
            sent.append(1)
            yield b"x" * 65536
        yield b'"}]}'

    r = c.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert script.seen == []


def test_a_body_under_the_limit_passes(script: Script) -> None:
    r = make_client(script).post(
        "/v1/embeddings", json={"input": ["word " * 1000] * 40}
    )  # ~200 KB: under the body limit and the character limits
    assert r.status_code == 200, r.text


def test_limits_config_checks_name_both_fields() -> None:
    with pytest.raises(ConfigError) as raised:
        RagServingArgs.load({"limits": {"max_text_chars": 10, "max_total_chars": 5}})
    assert "limits.max_text_chars" in str(raised.value)
    assert "limits.max_total_chars" in str(raised.value)
    with pytest.raises(ConfigError, match=r"limits\.max_body_bytes"):
        RagServingArgs.load({"limits": {"max_body_bytes": 10}})
    with pytest.raises(ConfigError, match="unknown config key"):
        RagServingArgs.load({"limits": {"max_bodybytes": 10}})
