"""How much one request may hold, checked before any model work.

Knows how to measure a parsed request against the `limits` section
(`graph.limits_config`): counts, characters, `top_k`, and `max_tokens` against
the context window; knows nothing of how the request is then served. The
body-size limit is enforced earlier, on the raw bytes, by `graph.api.body_limit`.
"""

from __future__ import annotations

from collections.abc import Iterable

from graph.api import protocol as p
from graph.api.counts import LIMIT_EXCEEDED, too_many
from graph.errors import APIError
from graph.limits_config import LimitsConfig


def _refuse(message: str, param: str, key: str) -> APIError:
    return APIError(
        400, f"{message} (limits.{key})", param=param, code="limit_exceeded"
    )


def _check_texts(
    texts: Iterable[tuple[str, p.Prompt]], limits: LimitsConfig, total_param: str
) -> None:
    """`texts` are (param, text) pairs; `total_param` names them all. Token
    ids count as text, one character each (no token is shorter)."""
    total = 0
    for param, text in texts:
        if len(text) > limits.max_text_chars:
            unit = "token ids" if isinstance(text, list) else "characters"
            raise _refuse(
                f"{param} has {len(text)} {unit}; at most "
                f"{limits.max_text_chars} are allowed",
                param,
                "max_text_chars",
            )
        total += len(text)
    if total > limits.max_total_chars:
        raise _refuse(
            f"the request's texts have {total} characters; at most "
            f"{limits.max_total_chars} are allowed",
            total_param,
            "max_total_chars",
        )


def _check_count(param: str, count: int, limit: int, key: str) -> None:
    # while a request is validated, `graph.api.counts` refuses these already
    if count > limit:
        raise APIError(
            400, too_many(param, count, limit, key), param=param, code=LIMIT_EXCEEDED
        )


def _check_top_k(param: str, top_k: int | None, limits: LimitsConfig) -> None:
    if top_k is not None and top_k > limits.max_top_k:
        raise _refuse(
            f"{param} is {top_k}; at most {limits.max_top_k}", param, "max_top_k"
        )


def _check_max_tokens(param: str, value: int | None, max_model_len: int) -> None:
    if value is not None and value >= max_model_len:
        raise APIError(
            400,
            f"{param} ({value}) must be below the model's context length "
            f"({max_model_len} tokens), which also holds the prompt",
            param=param,
            code="invalid_value",
        )


def _stop_texts(body: p._Sampling) -> list[tuple[str, p.Prompt]]:
    return [(f"stop.{i}", s) for i, s in enumerate(body.stop_list())]


def check_chat(
    body: p.ChatCompletionRequest, limits: LimitsConfig, max_model_len: int
) -> None:
    """Raise a 400 `APIError` naming the field when `body` exceeds a limit."""
    _check_count("messages", len(body.messages), limits.max_messages, "max_messages")
    texts = [(f"messages.{i}.content", m.text()) for i, m in enumerate(body.messages)]
    _check_texts([*texts, *_stop_texts(body)], limits, "messages")
    _check_max_tokens("max_tokens", body.max_tokens, max_model_len)
    _check_max_tokens(
        "max_completion_tokens", body.max_completion_tokens, max_model_len
    )
    if body.rag is not None:
        _check_top_k("rag.top_k", body.rag.top_k, limits)


def check_completion(
    body: p.CompletionRequest, limits: LimitsConfig, max_model_len: int
) -> None:
    """Raise a 400 `APIError` naming the field when `body` exceeds a limit."""
    _check_texts(
        [("prompt", body.prompt_input()), *_stop_texts(body)], limits, "prompt"
    )
    _check_max_tokens("max_tokens", body.max_tokens, max_model_len)


def check_embeddings(body: p.EmbeddingRequest, limits: LimitsConfig) -> None:
    """Raise a 400 `APIError` naming the field when `body` exceeds a limit."""
    texts = body.inputs()
    _check_count(
        "input", len(texts), limits.max_embedding_inputs, "max_embedding_inputs"
    )
    _check_texts(
        (
            ("input" if len(texts) == 1 else f"input.{i}", t)
            for i, t in enumerate(texts)
        ),
        limits,
        "input",
    )


def check_rerank(body: p.RerankRequest, limits: LimitsConfig) -> None:
    """Raise a 400 `APIError` naming the field when `body` exceeds a limit."""
    docs = body.texts()
    _check_count(
        "documents", len(docs), limits.max_rerank_documents, "max_rerank_documents"
    )
    _check_texts(
        [("query", body.query), *((f"documents.{i}", d) for i, d in enumerate(docs))],
        limits,
        "documents",
    )


def check_retrieve(body: p.RetrieveRequest, limits: LimitsConfig) -> None:
    """Raise a 400 `APIError` naming the field when `body` exceeds a limit."""
    _check_texts([("query", body.query)], limits, "query")
    _check_top_k("top_k", body.top_k, limits)
