"""HTTP middleware of the ingress: the `rag.request` root span (OpenTelemetry's
ASGI middleware), request id, `x-trace-id`, auth.

Knows how one HTTP exchange is wrapped (ids, trace, key check, errors answered
as the envelope); knows nothing of the routes behind it.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Span

from graph.api.body_limit import BodySizeLimit
from graph.api.context import ServingContext
from graph.api.counts import CountLimits
from graph.api.releases import observe
from graph.errors import APIError, error_response, to_api_error
from graph.gate.tenancy import route_of
from telemetry.tracing import trace_id_hex, tracer

ROOT_SPAN = "rag.request"


def install_middleware(app: FastAPI, ctx: ServingContext) -> None:
    """Wrap every request of `app` in its root span, id and key check."""
    # Added first, so it runs inside the request context: a 413 still carries
    # the request id and its span, and a bad key is refused before any read.
    app.add_middleware(BodySizeLimit, max_bytes=ctx.args.limits.max_body_bytes)
    app.add_middleware(CountLimits, limits=lambda: ctx.args.limits)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Any) -> Response:
        """Request id, `x-trace-id` and API-key authentication, inside the
        `rag.request` span OpenTelemetry's ASGI middleware opened; the release
        that answered, on the response and the span."""
        started = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        span = trace.get_current_span()
        span.set_attribute("request.id", rid)
        response = await _answer(request, call_next, ctx, rid)
        observe(request, response, span, started)
        return finish(response, span, rid)

    # Added last, so it wraps the middleware above: it continues a client's
    # `traceparent`, and ends the span once the last byte is sent (streams too).
    app.add_middleware(
        OpenTelemetryMiddleware,
        default_span_details=root_span_details,
        exclude_spans=["receive", "send"],
        tracer=tracer(),
    )


def root_span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`rag.request` for every HTTP exchange, with its method and path."""
    return ROOT_SPAN, {
        "http.request.method": scope.get("method", ""),
        "url.path": scope.get("path", ""),
    }


async def _answer(
    request: Request, call_next: Any, ctx: ServingContext, rid: str
) -> Response:
    if ctx.gate is not None:  # tenants: keys, limits, audit (graph.gate.tenancy)
        return await ctx.gate.serve(
            request, lambda: _call(request, call_next, rid), rid
        )
    if not authorized(request, ctx.api_keys):
        return error_response(
            APIError(
                401,
                "Missing or invalid API key (Authorization: Bearer ...).",
                code="invalid_api_key",
            ),
            rid,
        )
    return await _call(request, call_next, rid)


async def _call(request: Request, call_next: Any, rid: str) -> Response:
    try:
        response: Response = await call_next(request)
    except Exception as exc:
        # Answer here: Starlette re-raises from its catch-all handler, and
        # servers then log it and drop the connection.
        response = error_response(to_api_error(exc, rid), rid)
    return response


def finish(response: Response, span: Span, rid: str) -> Response:
    """Name the request and its trace on the response. Behind Serve's proxy
    the proxy names the request (the same id: it puts it on the request when
    the client sent none), so a second header would only repeat it."""
    if behind_serve_proxy():
        if "x-request-id" in response.headers:
            del response.headers["x-request-id"]
    else:
        response.headers["x-request-id"] = rid
    trace_id = trace_id_hex(span)
    if trace_id:
        response.headers["x-trace-id"] = trace_id
    return response


def authorized(request: Request, keys: frozenset[str]) -> bool:
    """No keys configured, a probe, or a known bearer token."""
    if not keys or not route_of(request).startswith(("/v1/", "/admin/")):
        return True
    auth = request.headers.get("authorization", "")
    return auth.startswith("Bearer ") and auth.removeprefix("Bearer ").strip() in keys


@functools.cache
def behind_serve_proxy() -> bool:
    """Whether this app runs in a Serve replica (whose proxy adds `X-Request-ID`
    to every response) rather than in-process (tests, `TestClient`)."""
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:
        return False
    return True
