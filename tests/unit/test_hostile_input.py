"""Hostile input over HTTP (no Ray): every bad value is a 400 envelope naming
the field, before any step runs.

The stand-in steps of `tests.unit.test_api` record every generation request,
so "refused before any model work" is observable.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_api import Script, body, make_client

CHAT = "/v1/chat/completions"


@pytest.fixture
def script() -> Script:
    return Script()


def assert_400(r: Any, param: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err
    return err


SAMPLING = [
    # The fuzzer's 500: an empty stop string (vLLM refuses it).
    ({"stop": [""]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -5e-324}, "top_p"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": -1}, "repetition_penalty"),
    ({"repetition_penalty": 2.5}, "repetition_penalty"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"presence_penalty": -2.5}, "presence_penalty"),
    ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"seed": 2**63}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2**40}, "max_tokens"),
    ({"max_completion_tokens": -1}, "max_completion_tokens"),
    ({"n": 2}, "n"),
    ({"temperature": "hot"}, "temperature"),
]


@pytest.mark.parametrize(("extra", "param"), SAMPLING, ids=str)
def test_sampling_values_vllm_refuses_are_400_naming_the_field(
    script: Script, extra: dict[str, Any], param: str
) -> None:
    r = make_client(script).post(CHAT, json=body(**extra))
    assert_400(r, param)
    assert script.seen == []  # refused before the generator saw it


def test_non_finite_numbers_are_400(script: Script) -> None:
    client = make_client(script)
    for raw in (b"NaN", b"Infinity", b"-Infinity"):
        r = client.post(
            CHAT,
            content=b'{"messages": [{"role": "user", "content": "hi"}], '
            b'"temperature": ' + raw + b"}",
            headers={"content-type": "application/json"},
        )
        assert_400(r, "temperature")


def test_a_long_user_or_name_is_400_in_characters(script: Script) -> None:
    client = make_client(script)
    err = assert_400(client.post(CHAT, json=body(user="u" * 257)), "user")
    assert "at most 256 characters" in err["message"]
    named = {"messages": [{"role": "user", "content": "hi", "name": "n" * 257}]}
    err = assert_400(client.post(CHAT, json=named), "messages.0.name")
    assert "at most 256 characters" in err["message"]
    assert client.post(CHAT, json=body(user="u" * 256)).status_code == 200


def test_the_fuzzers_first_500_is_a_400(script: Script) -> None:
    r = make_client(script).post(
        CHAT,
        json={
            "messages": [{"role": "user", "content": ""}],
            "stop": [""],
            "top_p": 5e-324,
            "repetition_penalty": 5e-324,
            "temperature": 0.0,
        },
    )
    assert_400(r, "stop")


def raw_chat(content_json: str) -> bytes:
    return (
        '{"messages": [{"role": "user", "content": ' + content_json + "}]}"
    ).encode()


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ('"a\\u0000b\\ud800c"', "surrogate"),  # the fuzzer's second 500
        ('"a\\ud800c"', "surrogate"),
        ('"\\udfff"', "surrogate"),
        ('[{"type": "text", "text": "x\\ud83d"}]', "surrogate"),
    ],
)
def test_text_that_cannot_be_encoded_is_400(
    script: Script, content: str, what: str
) -> None:
    r = make_client(script).post(
        CHAT, content=raw_chat(content), headers={"content-type": "application/json"}
    )
    err = assert_400(r, "messages.0.content" + (".0.text" if "[" in content else ""))
    assert what in err["message"]
    assert script.seen == []


def test_surrogates_are_refused_in_every_text_field(script: Script) -> None:
    client = make_client(script)
    cases = [
        ("/v1/completions", '{"prompt": "a\\udc00"}', "prompt"),
        ("/v1/embeddings", '{"input": ["ok", "\\ud800"]}', "input.1"),
        ("/v1/rerank", '{"query": "q", "documents": ["\\ud800"]}', "documents.0"),
        ("/v1/rerank", '{"query": "\\ud800", "documents": ["d"]}', "query"),
        ("/v1/retrieve", '{"query": "a\\udfff"}', "query"),
        (CHAT, raw_chat('"hi"')[:-2].decode() + '], "stop": ["\\ud800"]}', "stop.0"),
        (CHAT, raw_chat('"hi"')[:-2].decode() + '], "user": "\\ud800"}', "user"),
    ]
    for path, raw, param in cases:
        r = client.post(
            path, content=raw.encode(), headers={"content-type": "application/json"}
        )
        assert_400(r, param)


def test_nul_inside_text_is_accepted_and_reaches_the_engine(script: Script) -> None:
    # vLLM's benchmark client sends the NUL token in random prompts; vLLM
    # and OpenAI accept it, so the graph does too, in every text field.
    client = make_client(script)
    r = client.post(
        CHAT,
        content=raw_chat('"a\\u0000b"')[:-2] + b'], "stop": ["\\u0000x"]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert script.seen[-1].messages[-1]["content"] == "a\x00b"
    r = client.post("/v1/completions", json={"prompt": "p\x00q", "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert script.seen[-1].prompt == "p\x00q"
    r = client.post("/v1/embeddings", json={"input": ["\x00", "x\x00y"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2


def test_a_surrogate_in_a_key_is_a_clean_400(script: Script) -> None:
    r = make_client(script).post(
        CHAT,
        content=raw_chat('"hi"')[:-1] + b', "\\ud800": 1}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_text_with_valid_unicode_is_accepted(script: Script) -> None:
    r = make_client(script).post(
        CHAT, json=body(messages=[{"role": "user", "content": "héllo 😀 \t\n"}])
    )
    assert r.status_code == 200, r.text
    assert script.seen[0].messages[-1]["content"] == "héllo 😀 \t\n"


def test_body_that_is_not_utf8_is_400(script: Script) -> None:
    r = make_client(script).post(
        CHAT,
        content=raw_chat('"cafX"').replace(b"X", b"\xe9"),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
