"""Token-id prompts and inputs, as OpenAI and vLLM accept them: over HTTP (no
Ray) to the engine's request, through the real MiniLM embedder, counted
against the limits like text, and written into the schema."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from graph.config import RagServingArgs
from models.errors import InvalidRequestError
from tests.unit.test_api import Script, make_client


@pytest.fixture
def script() -> Script:
    return Script()


def test_a_token_id_prompt_reaches_the_engine_as_ids(script: Script) -> None:
    client = make_client(script)
    for prompt in ([5, 0, 17], [[5, 0, 17]]):
        r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
        assert r.status_code == 200, r.text
        seen = script.seen[-1]
        assert seen.prompt is None and seen.prompt_token_ids == [5, 0, 17]


@pytest.mark.parametrize(
    ("prompt", "param"),
    [
        ([], "prompt"),
        ([[]], "prompt"),
        ([[1], [2]], "prompt"),
        ([-1], "prompt"),
        ([1, "a"], "prompt"),
        ([2**31], "prompt"),
    ],
)
def test_bad_token_id_prompts_are_400(script: Script, prompt: Any, param: str) -> None:
    r = make_client(script).post("/v1/completions", json={"prompt": prompt})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)  # prompt, prompt.0, ...
    assert script.seen == []


def test_token_ids_count_against_the_text_limits(script: Script) -> None:
    limit = RagServingArgs().limits.max_text_chars
    client = make_client(script)
    r = client.post("/v1/completions", json={"prompt": [1] * (limit + 1)})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "limit_exceeded" and "token ids" in err["message"]
    # One input of many ids is one input, not many (limits.max_embedding_inputs).
    inputs = RagServingArgs().limits.max_embedding_inputs
    r = client.post("/v1/embeddings", json={"input": [7] * (inputs + 1)})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 1
    r = client.post("/v1/embeddings", json={"input": [[7]] * (inputs + 1)})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "limit_exceeded"


def test_embeddings_of_token_ids_are_the_embeddings_of_their_text(
    script: Script, default_embedder: Any
) -> None:
    tokenizer = default_embedder._model.tokenizer
    text = "ragserve batches requests"
    ids = tokenizer(text)["input_ids"]
    calls: list[Any] = []

    async def real(inputs: list[Any]) -> tuple[np.ndarray, int]:
        calls.append(inputs)
        vectors, counts = await asyncio.to_thread(
            default_embedder.embed_with_counts, inputs
        )
        return vectors, sum(counts)

    client = make_client(script)
    client.app.state.ctx.embed_with_usage = real  # type: ignore[attr-defined]
    by_text = client.post("/v1/embeddings", json={"input": [text, "x\x00y"]})
    by_ids = client.post("/v1/embeddings", json={"input": [ids]})
    assert by_text.status_code == by_ids.status_code == 200, by_text.text + by_ids.text
    assert calls == [[text, "x\x00y"], [ids]]
    vector = np.array(by_ids.json()["data"][0]["embedding"])
    assert np.allclose(vector, by_text.json()["data"][0]["embedding"], atol=1e-5)
    assert by_ids.json()["usage"]["prompt_tokens"] == len(ids)
    # OpenAI's rule: one kind per request, texts or token-id lists.
    mixed = client.post("/v1/embeddings", json={"input": [text, ids]})
    assert mixed.status_code == 400


def test_the_embedder_refuses_ids_past_its_vocabulary(default_embedder: Any) -> None:
    vocab = len(default_embedder._model.tokenizer)
    with pytest.raises(InvalidRequestError, match=f"token id {vocab}"):
        default_embedder.embed_with_counts([[101, vocab, 102]])
    # Over a batch's size too (token ids go batch_size at a time).
    many: list[Any] = [[101, 2000 + i, 102] for i in range(70)]
    vectors, counts = default_embedder.embed_with_counts(many)
    assert vectors.shape[0] == 70 and counts == [3] * 70


def test_the_schema_describes_token_id_prompts(script: Script) -> None:
    doc = make_client(script).get("/openapi.json").json()
    props = doc["components"]["schemas"]
    limit = RagServingArgs().limits.max_text_chars
    for request, field in (
        ("CompletionRequest", "prompt"),
        ("EmbeddingRequest", "input"),
    ):
        options = props[request]["properties"][field]["anyOf"]
        flat = next(o for o in options if o.get("items", {}).get("type") == "integer")
        assert flat["minItems"] == 1 and flat["maxItems"] == limit
        assert flat["items"]["minimum"] == 0
        nested = next(o for o in options if o.get("items", {}).get("type") == "array")
        assert nested["items"]["maxItems"] == limit
    vocab = props["EmbeddingRequest"]["properties"]["input"]["anyOf"][2]["items"]
    assert vocab["maximum"] == 30521  # MiniLM's vocabulary, 30,522 ids
