"""The real graph: errors in the OpenAI envelope, batching, client disconnects."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

CHAT = "/v1/chat/completions"


def assert_envelope(
    r: httpx.Response, status: int, param: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    return err


def chat(**kw: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **kw}


def test_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post(
        CHAT, content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    err = assert_envelope(r, 400)
    assert err["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(temperature=5), "temperature"),
        (chat(n=2), "n"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(logprobs=True), "logprobs"),
        ({"max_tokens": 4}, "messages"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
        (chat(rag={"top_k": 0}), "rag.top_k"),
        (chat(stop=[""]), "stop"),
        (chat(top_p=0), "top_p"),
    ],
)
def test_invalid_fields_are_400_not_422(
    client: httpx.Client, body: dict, param: str
) -> None:
    err = assert_envelope(client.post(CHAT, json=body), 400, param)
    assert err["type"] == "invalid_request_error"


def test_unknown_model_is_404(client: httpx.Client) -> None:
    err = assert_envelope(client.post(CHAT, json=chat(model="gpt-4o")), 404, "model")
    assert err["code"] == "model_not_found"
    assert "tiny-llama" in err["message"]
    assert_envelope(
        client.post("/v1/embeddings", json={"input": "x", "model": "nope"}), 404
    )


def test_prompt_longer_than_context_is_400_naming_the_limit(
    client: httpx.Client,
) -> None:
    long = "word " * 1500
    body = chat(messages=[{"role": "user", "content": long}], rag={"enabled": False})
    err = assert_envelope(client.post(CHAT, json=body), 400, "messages")
    assert "1024" in err["message"]
    assert err["code"] == "context_length_exceeded"
    # Streaming too: a plain 400 before any event, not a broken stream.
    r = client.post(CHAT, json={**body, "stream": True})
    assert_envelope(r, 400, "messages")
    completion = client.post("/v1/completions", json={"prompt": long, "max_tokens": 4})
    assert_envelope(completion, 400)


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/nope"), 404)
    assert_envelope(client.get(CHAT), 405)


def test_concurrent_embeddings_are_batched(serve_graph: dict[str, Any]) -> None:
    from ray import serve

    handle = serve.get_deployment_handle("embedder", app_name="ragserve")
    before = handle.stats.remote().result()["requests"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=serve_graph["url"], timeout=60) as c:
            rs = await asyncio.gather(
                *(
                    c.post("/v1/embeddings", json={"input": f"question number {i}"})
                    for i in range(16)
                )
            )
        return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * 16
    stats = handle.stats.remote().result()
    sizes = stats["batch_sizes"][before:]
    assert len(sizes) == 16
    assert max(sizes) > 1, sizes
    # Fewer forward passes than requests: requests shared batches.
    assert sum(1 / s for s in sizes) < 16


def test_disconnect_mid_stream_aborts_in_engine(serve_graph: dict[str, Any]) -> None:
    from ray import serve

    generator = serve.get_deployment_handle("generator", app_name="ragserve")

    def stats() -> dict[str, Any]:
        return generator.stats.remote().result()

    aborted_before = stats().get("finished_abort", 0)
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": True,
        "max_tokens": 900,
        "ignore_eos": True,
        "rag": {"enabled": False},
    }
    with (
        httpx.Client(base_url=serve_graph["url"], timeout=60) as c,
        c.stream("POST", CHAT, json=body) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()  # held: dropping it would close the stream early
        seen = 0
        for line in lines:
            if line.startswith("data: "):
                seen += 1
            if seen >= 3:
                break
        # The request is running in the engine while we read.
        assert stats()["num_unfinished_requests"] == 1
    # Leaving the block closed the connection mid-stream.
    deadline = time.time() + 30
    while time.time() < deadline and stats()["num_unfinished_requests"]:
        time.sleep(0.2)
    after = stats()
    assert after["num_unfinished_requests"] == 0, after
    # It ended as an abort, not by running out its 900 tokens.
    assert after["finished_abort"] == aborted_before + 1, after


def test_past_capacity_requests_get_503_with_retry_after(
    serve_graph: dict[str, Any],
) -> None:
    """The embedder admits 16 ongoing + 16 queued; a burst of 64 overflows it."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=serve_graph["url"], timeout=60) as c:
            return await asyncio.gather(
                *(
                    c.post("/v1/embeddings", json={"input": f"overload {i} " * 20})
                    for i in range(64)
                )
            )

    responses = asyncio.run(burst())
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200, 503], statuses
    refused = [r for r in responses if r.status_code == 503]
    assert len([r for r in responses if r.status_code == 200]) >= 16
    for r in refused:
        err = assert_envelope(r, 503)
        assert err["code"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
    # Admitted work finished and the node recovers at once.
    with httpx.Client(base_url=serve_graph["url"], timeout=60) as c:
        assert (
            c.post("/v1/embeddings", json={"input": "after the storm"}).status_code
            == 200
        )
