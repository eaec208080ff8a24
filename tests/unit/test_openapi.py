"""The OpenAPI document tells the truth: real statuses, the envelope, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from graph.config import RagServingArgs
from tests.unit.test_api import Script, make_client


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return make_client(Script()).get("/openapi.json").json()


def operations(doc: dict[str, Any]):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_no_422_anywhere_and_every_error_is_the_envelope(document) -> None:
    assert "422" not in json.dumps(document["paths"])
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, _, op in operations(document):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, path
    envelope = document["components"]["schemas"]["ErrorDetail"]
    assert set(envelope["properties"]) == {"message", "type", "param", "code"}


def test_each_route_documents_what_it_returns(document) -> None:
    statuses = {
        (path, method): sorted(op["responses"])
        for path, method, op in operations(document)
    }
    post = ["200", "400", "404", "413", "500", "503", "504"]
    assert statuses[("/v1/chat/completions", "post")] == post
    assert statuses[("/v1/embeddings", "post")] == post
    assert statuses[("/v1/retrieve", "post")] == [
        "200",
        "400",
        "413",
        "500",
        "503",
        "504",
    ]
    assert statuses[("/ready", "get")] == ["200", "503"]
    assert statuses[("/health", "get")] == ["200"]
    chat_ok = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]
    assert set(chat_ok["content"]) == {"application/json", "text/event-stream"}
    assert chat_ok["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletionResponse"
    )


def test_401_is_documented_only_when_keys_are_required() -> None:
    doc = make_client(Script(), api_keys=frozenset({"k"})).get("/openapi.json").json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "401" in chat["responses"]
    assert chat["security"] == [{"bearer": []}]
    assert "401" not in doc["paths"]["/health"]["get"]["responses"]


def test_request_schemas_carry_the_configured_limits(document) -> None:
    limits = RagServingArgs().limits
    schemas = document["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["messages"]["maxItems"] == limits.max_messages
    assert chat["messages"]["contains"]["properties"]["role"] == {"const": "user"}
    assert chat["max_tokens"]["anyOf"][0]["maximum"] == 511  # context 512
    stop = chat["stop"]["anyOf"]
    assert stop[0]["minLength"] == 1
    assert stop[1]["maxItems"] == 4
    content = schemas["ChatMessage"]["properties"]["content"]["anyOf"][0]
    assert content["maxLength"] == limits.max_text_chars
    assert "pattern" not in content  # NUL is valid text
    sampling = schemas["ChatCompletionRequest"]["properties"]
    assert sampling["top_p"]["anyOf"][0]["exclusiveMinimum"] == 0
    assert sampling["seed"]["anyOf"][0]["maximum"] == 2**63 - 1
    assert sampling["presence_penalty"]["anyOf"][0]["minimum"] == -2
    embed = schemas["EmbeddingRequest"]["properties"]["input"]["anyOf"]
    assert embed[0]["minLength"] == 1
    assert embed[1]["maxItems"] == limits.max_embedding_inputs
    rerank = schemas["RerankRequest"]["properties"]["documents"]
    assert rerank["maxItems"] == limits.max_rerank_documents
    top_k = schemas["RetrieveRequest"]["properties"]["top_k"]["anyOf"][0]
    assert top_k["maximum"] == limits.max_top_k
    assert top_k["minimum"] == 1
    assert "ge" not in json.dumps(document["components"]["schemas"]).replace(
        "range", ""
    ).split('"')  # no raw pydantic bounds left anywhere


def test_a_wrong_method_is_405_with_allow(document) -> None:
    r = make_client(Script()).delete("/v1/chat/completions")
    assert r.status_code == 405
    assert r.headers["allow"] == "OPTIONS, POST"
    assert r.json()["error"]["type"] == "invalid_request_error"
