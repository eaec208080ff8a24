"""HTTP middleware of the ingress: request id, the `rag.request` root span, auth.

Knows how one HTTP exchange is wrapped (ids, trace, key check, errors answered
as the envelope); knows nothing of the routes behind it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from graph.context import ServingContext
from graph.errors import APIError, error_response, to_api_error
from telemetry.tracing import extract, trace_id_hex, tracer


def install_middleware(app: FastAPI, ctx: ServingContext) -> None:
    """Wrap every request of `app` in its id, root span and key check."""

    @app.middleware("http")
    async def request_context(request: Request, call_next: Any) -> Response:
        """Request id, the `rag.request` root span (continuing a client's
        `traceparent`), `x-trace-id`, and API-key authentication."""
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        span = start_root_span(request, rid)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            response = await _answer(request, call_next, ctx, rid)
        except BaseException:
            span.end()
            raise
        finally:
            otel_context.detach(token)
        return finish(response, span, rid)


def start_root_span(request: Request, rid: str) -> Span:
    """`rag.request`, continuing the client's `traceparent` if it sent one."""
    return tracer().start_span(
        "rag.request",
        context=extract(request.headers),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "url.path": request.url.path,
            "request.id": rid,
        },
    )


async def _answer(
    request: Request, call_next: Any, ctx: ServingContext, rid: str
) -> Response:
    if not authorized(request, ctx.api_keys):
        return error_response(
            APIError(
                401,
                "Missing or invalid API key (Authorization: Bearer ...).",
                code="invalid_api_key",
            ),
            rid,
        )
    try:
        response: Response = await call_next(request)
    except Exception as exc:
        # Answer here: Starlette re-raises from its catch-all handler, and
        # servers then log it and drop the connection.
        response = error_response(to_api_error(exc, rid), rid)
    return response


def finish(response: Response, span: Span, rid: str) -> Response:
    """Name the request and trace on the response; end the root span when the
    last byte is sent (at once unless streaming)."""
    response.headers["x-request-id"] = rid
    trace_id = trace_id_hex(span)
    if trace_id:
        response.headers["x-trace-id"] = trace_id
    span.set_attribute("http.response.status_code", response.status_code)
    body = getattr(response, "body_iterator", None)
    if body is None:
        span.end()
    else:  # streaming: the request lasts until the last byte is sent
        response.body_iterator = _end_span_after(body, span)  # type: ignore[attr-defined]
    return response


def authorized(request: Request, keys: frozenset[str]) -> bool:
    """No keys configured, a probe, or a known bearer token."""
    if not keys or not request.url.path.startswith("/v1/"):
        return True
    auth = request.headers.get("authorization", "")
    return auth.startswith("Bearer ") and auth.removeprefix("Bearer ").strip() in keys


async def _end_span_after(body: AsyncIterator[Any], span: Span) -> AsyncIterator[Any]:
    try:
        async for part in body:
            yield part
    finally:
        span.end()
