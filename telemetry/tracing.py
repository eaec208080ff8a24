"""Tracer set-up and W3C context carried across process hops.

Tracing is on when an OTLP endpoint is configured (config, or the standard
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`) and off
otherwise; off leaves OpenTelemetry's no-op tracer in place, so every span
call below costs a function call and nothing else.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from telemetry.config import TelemetryConfig

logger = logging.getLogger("ragserve.telemetry")

TRACER_NAME = "ragserve"
_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured: dict[str, Any] = {}

#: Key in a carrier dict holding the caller's wall clock (ns) at send time, so
#: the callee can draw the handle/router queue wait as a span of its own.
SENT_AT = "x-ragserve-sent-at-ns"
#: Key in a carrier dict naming the release a request was routed to, so the
#: step deployments (shared by releases) label their series with it.
RELEASE_KEY = "x-ragserve-release"
#: The release of the request being handled in this task (set by the ingress).
CURRENT_RELEASE: ContextVar[str | None] = ContextVar("ragserve_release", default=None)


def resolve_endpoint(config: TelemetryConfig) -> tuple[str | None, str]:
    """The OTLP traces endpoint and protocol ('grpc' or 'http/protobuf')."""
    env = os.environ
    endpoint = (
        config.otlp_endpoint
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    protocol = (
        config.otlp_protocol
        or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol not in ("grpc", "http/protobuf"):
        raise ValueError(
            f"OTLP protocol {protocol!r} is not supported; "
            "use 'grpc' or 'http/protobuf'"
        )
    return endpoint or None, protocol


def setup_tracing(
    config: TelemetryConfig, component: str, replica_id: str | None = None
) -> bool:
    """Install an OTLP-exporting tracer provider for this process, once.

    Args:
        config: the telemetry section.
        component: the deployment name (`ingress`, `embedder`, ...).
        replica_id: Ray Serve's replica id, when running in a replica.

    Returns:
        True when tracing is on in this process.
    """
    endpoint, protocol = resolve_endpoint(config)
    if not endpoint:
        return False
    with _lock:
        if _configured:
            return True
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        attributes: dict[str, Any] = {
            "service.name": config.service_name,
            "service.instance.id": replica_id or f"{component}-{os.getpid()}",
            "deployment": component,
            "process.pid": os.getpid(),
        }
        if replica_id:
            attributes["replica.id"] = replica_id
        provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio)),
        )
        provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint, protocol)))
        trace.set_tracer_provider(provider)
        _configured.update(endpoint=endpoint, protocol=protocol, provider=provider)
        logger.info("tracing on: %s via %s (%s)", component, endpoint, protocol)
        return True


def _exporter(endpoint: str, protocol: str) -> Any:
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPExporter,
        )

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        return HTTPExporter(endpoint=url)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GRPCExporter,
    )

    insecure = not endpoint.startswith("https://")
    return GRPCExporter(endpoint=endpoint, insecure=insecure)


def tracing_enabled() -> bool:
    return bool(_configured)


def force_flush(timeout_ms: int = 5000) -> None:
    provider = _configured.get("provider")
    if provider is not None:
        provider.force_flush(timeout_ms)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject(span: Span | None = None) -> dict[str, str]:
    """A carrier dict with the send time and the current (or `span`'s) context.

    The send time is there with tracing off too: the handle-queue wait metric
    is measured from it, and metrics must not depend on tracing.
    """
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    _PROPAGATOR.inject(carrier, context=ctx)
    carrier[SENT_AT] = str(time.time_ns())
    release = CURRENT_RELEASE.get()
    if release:
        carrier[RELEASE_KEY] = release
    return carrier


def release_of(carrier: Mapping[str, str] | None) -> str:
    """The release a carrier names ("" when none)."""
    return (carrier or {}).get(RELEASE_KEY, "")


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context in a carrier (or an HTTP header mapping), if any."""
    if not carrier:
        return None
    return _PROPAGATOR.extract(dict(carrier))


def trace_headers(span: Span) -> dict[str, str]:
    """`traceparent`/`tracestate` for a downstream engine (vLLM's trace_headers)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def span_id_hex(span: Span) -> str:
    return format(span.get_span_context().span_id, "016x")


def trace_id_hex(span: Span) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def handle_wait_ms(carrier: Mapping[str, str] | None) -> float | None:
    """Time since the caller sent the call (router + replica queue + transport)."""
    if not carrier or SENT_AT not in carrier:
        return None
    return max(0.0, (time.time_ns() - int(carrier[SENT_AT])) / 1e6)


def start_step_span(
    name: str,
    carrier: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Span:
    """Start (not activate) a span under the context in `carrier`.

    When the carrier holds the caller's send time, the span starts then and a
    `queue.handle` child covers the time until this process picked the call up
    (router queue + replica queue + transport). The caller ends the span.
    """
    parent = extract(carrier)
    sent_at = int(carrier[SENT_AT]) if carrier and SENT_AT in carrier else None
    now = time.time_ns()
    start = sent_at if sent_at is not None and sent_at <= now else now
    span = tracer().start_span(
        name,
        context=parent,
        kind=kind,
        attributes=dict(attributes or {}),
        start_time=start,
    )
    if sent_at is not None and span.is_recording():
        record_interval(
            "queue.handle",
            start,
            now,
            parent=span,
            attributes={"queue.wait_ms": (now - start) / 1e6},
        )
    return span


@contextmanager
def step_span(
    name: str,
    carrier: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """`start_step_span`, active for the block and ended after it."""
    span = start_step_span(name, carrier, attributes, kind)
    with trace.use_span(span, end_on_exit=True, record_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            _mark_error(current, exc)
            raise


def record_interval(
    name: str,
    start_ns: int,
    end_ns: int,
    parent: Span | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A span for an interval already over (a queue wait measured after the fact)."""
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    span = tracer().start_span(
        name, context=ctx, attributes=dict(attributes or {}), start_time=start_ns
    )
    span.end(end_time=max(end_ns, start_ns))


def _mark_error(span: Span, exc: BaseException) -> None:
    if isinstance(exc, GeneratorExit):
        return
    import asyncio

    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("request.cancelled", True)
        return
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", type(exc).__name__)
