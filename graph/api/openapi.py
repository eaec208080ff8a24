"""The OpenAPI document as the server really answers.

Knows, per route, the statuses the server returns and their bodies (the
OpenAI error envelope for every error, never FastAPI's 422), the response
models, and the request constraints that come from config (`limits`, the
context window); knows nothing of how a route is served. FastAPI builds the
document from the routes; this module corrects it once, on first request.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from graph.api import protocol as p
from graph.api.context import ServingContext
from graph.api.openapi_admin import admin_errors, describe_live
from graph.api.wire_types import INT64_MAX, INT64_MIN
from graph.limits_config import LimitsConfig


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, safe to show a user.")
    type: str = Field(description="invalid_request_error, not_found_error, ...")
    param: str | None = Field(description="The request field at fault, if any.")
    code: str | None = Field(description="A stable machine-readable code.")


class ErrorResponse(BaseModel):
    """The OpenAI error envelope, for every 4xx and 5xx."""

    error: ErrorDetail


ERRORS = {
    400: "Invalid JSON, field or value, or a limit exceeded; `param` names the field.",
    401: "Missing or invalid API key.",
    403: "A tenant's key on an admin route (they take an operator key).",
    404: "The model named is not served here (on /admin/*: this graph routes "
    "no releases).",
    409: "The live traffic cannot take this change now (a release not warm or "
    "retired, nothing to roll back to or restore, already promoted).",
    413: "The body exceeds `limits.max_body_bytes`.",
    429: "Over the tenant's rate limit or quota; retry after `Retry-After`.",
    500: "Internal error; the message quotes the request id.",
    503: "At capacity, restarting or not ready (on /admin/*: the change did not "
    "reach every replica in 30 s); retry after `Retry-After` seconds.",
    504: "The request's deadline passed (`resilience.request_timeout_s`).",
}

Model = type[BaseModel]
_POST_ERRORS = (400, 404, 413, 500, 503, 504)

#: Per route: the 200 body model, the model of its SSE events (None: it does
#: not stream), and its error statuses.
ROUTES: dict[tuple[str, str], tuple[Model, Model | None, tuple[int, ...]]] = {
    ("/v1/chat/completions", "post"): (
        p.ChatCompletionResponse,
        p.ChatCompletionChunk,
        _POST_ERRORS,
    ),
    ("/v1/completions", "post"): (
        p.CompletionResponse,
        p.CompletionResponse,
        _POST_ERRORS,
    ),
    ("/v1/embeddings", "post"): (p.EmbeddingResponse, None, _POST_ERRORS),
    ("/v1/rerank", "post"): (p.RerankResponse, None, _POST_ERRORS),
    ("/v1/retrieve", "post"): (p.RetrieveResponse, None, (400, 413, 500, 503, 504)),
    ("/v1/models", "get"): (p.ModelList, None, (500,)),
}


def install_openapi(app: FastAPI, ctx: ServingContext) -> None:
    """Serve the corrected document at `/openapi.json`."""

    def openapi() -> dict[str, Any]:
        # Not cached: whether a key is required changes when the first
        # tenant is added to an open tenant store.
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        gate = ctx.gate
        document_responses(
            schema,
            auth=bool(ctx.api_keys) or gate is not None,
            rate_limited=gate is not None,
            auth_required=bool(ctx.api_keys) or (gate is not None and not gate.open),
        )
        apply_limits(schema, ctx.args.limits, ctx.names.max_model_len)
        if ctx.router is not None:
            describe_live(_components(schema), list(ctx.router.releases))
        dimension = _embedding_dimension(ctx)
        props = _components(schema)
        if dimension is not None:
            dims = props["EmbeddingRequest"]["properties"]
            _integers(dims["dimensions"], minimum=dimension, maximum=dimension)
        models = ctx.args.models
        for request, field, vocab in (
            ("EmbeddingRequest", "input", _vocab(models.embedder.model, "embedder")),
            (
                "CompletionRequest",
                "prompt",
                _vocab(models.generator.model, "generator"),
            ),
        ):
            if vocab is not None:
                _token_ids(props[request]["properties"][field], maximum=vocab - 1)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _embedding_dimension(ctx: ServingContext) -> int | None:
    """The embedder's dimension, from the index it serves (the retriever
    refuses an index built by another embedder); None without an index."""
    from retrieval.manifest import read_manifest

    try:
        return read_manifest(ctx.args.retrieval.index_dir).dimension
    except Exception:
        return None


@functools.cache
def _vocab(spec: str, kind: str) -> int | None:
    """The vocabulary size of a model's tokenizer (its largest token id + 1),
    from the model folder's config; None when it cannot be read."""
    from models.resolve import resolve_embedder_path, resolve_generator_path

    try:
        if kind == "embedder":
            path = resolve_embedder_path(spec)[0]
        else:
            path = resolve_generator_path(spec)
        config = json.loads((Path(path) / "config.json").read_text())
        return int(config["vocab_size"])
    except Exception:
        return None


def _components(schema: dict[str, Any]) -> dict[str, Any]:
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault(
        "schemas", {}
    )
    return components


def _add_models(schema: dict[str, Any], *models: type[BaseModel]) -> None:
    _, defs = models_json_schema(
        [(m, "serialization") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    components = _components(schema)
    for name, model_schema in defs.get("$defs", {}).items():
        # A model used both ways (RerankDocument) keeps its request schema.
        components.setdefault(name, model_schema)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": _ref(ErrorResponse)}},
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer"},
            }
        }
    return response


def document_responses(
    schema: dict[str, Any],
    auth: bool,
    rate_limited: bool = False,
    auth_required: bool = True,
) -> None:
    """Every route's real statuses, errors as the envelope; no 422 anywhere."""
    models = {m for ok, event, _ in ROUTES.values() for m in (ok, event) if m}
    _add_models(schema, ErrorResponse, *sorted(models, key=lambda m: m.__name__))
    components = _components(schema)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if (path, method) in ROUTES or path in ("/health", "/ready"):
                op["responses"] = _responses(path, method, auth, rate_limited)
            else:
                _other_route(op, path, method, auth)
    if auth:
        components_root = schema["components"]
        components_root["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        for path, ops in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    # An open tenant store serves requests without a key
                    # (and refuses a wrong one): the key is then optional.
                    op["security"] = (
                        [{"bearer": []}] if auth_required else [{}, {"bearer": []}]
                    )


def _responses(
    path: str, method: str, auth: bool, rate_limited: bool
) -> dict[str, Any]:
    if path == "/health":
        return {"200": _ok({"type": "object", "properties": {"status": {}}})}
    if path == "/ready":
        return {
            "200": _ok({"type": "object", "properties": {"nodes": {"type": "object"}}}),
            "503": _error(503),
        }
    model, event, errors = ROUTES[(path, method)]
    ok = _ok(_ref(model))
    if event is not None:
        ok["content"]["text/event-stream"] = {"schema": _sse_event(event)}
    gated = path.startswith("/v1/")
    extra = {
        *((401,) if auth and gated else ()),
        *((429,) if rate_limited and gated else ()),
    }
    statuses = sorted({*errors, *extra})
    return {"200": ok, **{str(s): _error(s) for s in statuses}}


def _other_route(op: dict[str, Any], path: str, method: str, auth: bool) -> None:
    """A route without its own entry (admin, feedback): its own 200, the
    envelope for 400 (a body or parameters), 404 (a feature not configured),
    413 (a body), 500, 401 where keys are checked, and an admin change's
    409 and 503."""
    responses = {k: v for k, v in op.get("responses", {}).items() if k != "422"}
    statuses = {404, 500, *admin_errors(path, method)}
    if "requestBody" in op:
        statuses |= {400, 413}
    if op.get("parameters"):
        statuses.add(400)
    if auth and path.startswith(("/v1/", "/admin/")):
        statuses.add(401)
    if auth and path.startswith("/admin/"):
        statuses.add(403)
    responses.update({str(s): _error(s) for s in sorted(statuses)})
    op["responses"] = responses


def _sse_event(event: Model) -> dict[str, Any]:
    """One server-sent event (OpenAPI 3.1 describes each event): a JSON
    `event` chunk, the error envelope as the final event, or `[DONE]`."""
    json_data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [_ref(event), _ref(ErrorResponse)]},
    }
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}},
    }


def _ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": body}}}


def _variants(prop: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    """The schemas of `kind` ("string", "array") a property may take."""
    for option in prop.get("anyOf", [prop]):
        if option.get("type") == kind:
            yield option


def _strings(prop: dict[str, Any], **constraints: int) -> None:
    """Constrain every string a property may be, directly or as array items."""
    for option in _variants(prop, "string"):
        option.update(constraints)
    for array in _variants(prop, "array"):
        items = array.get("items", {})
        if items.get("type") == "string":
            items.update(constraints)


def _is_token_ids(array: dict[str, Any]) -> bool:
    return bool(array.get("items", {}).get("type") == "integer")


def _arrays(prop: dict[str, Any], **constraints: int) -> None:
    """Constrain every list a property may be, token-id lists apart."""
    for option in _variants(prop, "array"):
        if not _is_token_ids(option):
            option.update(constraints)


def _token_ids(prop: dict[str, Any], **constraints: int) -> None:
    """Constrain every token-id list a property may be: its length given as
    `minItems`/`maxItems`, its ids as `minimum`/`maximum`."""
    lengths = {k: v for k, v in constraints.items() if k.endswith("Items")}
    ids = {k: v for k, v in constraints.items() if k not in lengths}
    for array in _variants(prop, "array"):
        lists = [array, array.get("items", {})]
        for ids_list in (x for x in lists if _is_token_ids(x)):
            ids_list.update(lengths)
            ids_list["items"].update(ids)


def _integers(prop: dict[str, Any], **constraints: int) -> None:
    for option in _variants(prop, "integer"):
        option.update(constraints)


def apply_limits(schema: dict[str, Any], limits: LimitsConfig, context: int) -> None:
    """Write the configured limits into the request schemas."""
    text = limits.max_text_chars
    props = {name: s.get("properties", {}) for name, s in _components(schema).items()}
    chat, cmpl = props["ChatCompletionRequest"], props["CompletionRequest"]
    _arrays(chat["messages"], maxItems=limits.max_messages)
    chat["messages"]["contains"] = {
        "type": "object",
        "properties": {"role": {"const": "user"}},
        "required": ["role"],
    }
    _strings(props["ChatMessage"]["content"], maxLength=text)
    _strings(props["TextPart"]["text"], maxLength=text)
    for request in (chat, cmpl):
        _strings(request["stop"], minLength=1, maxLength=text)
        _arrays(request["stop"], maxItems=4)
        _integers(request["max_tokens"], maximum=context - 1)
    _integers(chat["max_completion_tokens"], maximum=context - 1)
    for request in (chat, cmpl):
        # FastAPI writes bounds as floats; 2**63 - 1 would round up to 2**63.
        _integers(request["seed"], minimum=INT64_MIN, maximum=INT64_MAX)
    _strings(cmpl["prompt"], minLength=1, maxLength=text)
    _arrays(cmpl["prompt"], minItems=1, maxItems=1)
    embed = props["EmbeddingRequest"]
    _strings(embed["input"], minLength=1, maxLength=text)
    _arrays(embed["input"], minItems=1, maxItems=limits.max_embedding_inputs)
    for prompt in (cmpl["prompt"], embed["input"]):
        # A token id counts as one character of text (no token is shorter).
        _token_ids(prompt, minItems=1, maxItems=text)
    rerank = props["RerankRequest"]
    _strings(rerank["query"], maxLength=text)
    _strings(rerank["documents"], maxLength=text)
    _arrays(rerank["documents"], maxItems=limits.max_rerank_documents)
    _strings(props["RerankDocument"]["text"], maxLength=text)
    _strings(props["RetrieveRequest"]["query"], maxLength=text)
    for request in (props["RetrieveRequest"], props["RagOptions"]):
        _integers(request["top_k"], maximum=limits.max_top_k)
    _whole_bounds(schema)


_RAW_BOUNDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
}


def _whole_bounds(node: Any) -> None:
    """Integer bounds as JSON Schema says them: pydantic leaves `ge`/`le` raw
    on a validated `Int | None`, and FastAPI writes `1.0` for `1`."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for raw, key in _RAW_BOUNDS.items():
                if raw in node:
                    node.setdefault(key, node.pop(raw))
            for key in _RAW_BOUNDS.values():
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = int(value)
        for child in node.values():
            _whole_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _whole_bounds(child)
