"""A local OTLP/HTTP trace receiver that counts what it is sent.

Accepts `POST .../v1/traces` (protobuf, optionally gzip) on loopback, answers
200 with an empty `ExportTraceServiceResponse`, and keeps counts of requests,
spans and span names: enough to learn whether a tracing config takes effect.
With `keep=True` it also keeps every span as a plain dict (ids, name, times,
attributes) for a benchmark to read after its run; not a trace store.
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OTLPSink:
    """Run with `start()`; read with `snapshot()`; end with `stop()`."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, keep: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self.keep = keep
        self.kept: list[dict[str, Any]] = []
        self.requests = 0
        self.undecoded = 0
        self.span_names: Counter[str] = Counter()
        self.services: Counter[str] = Counter()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                sink._record(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per export would drown the bench's output

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The traces URL to give an exporter (`.../v1/traces`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1/traces"

    def start(self) -> OTLPSink:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, body: bytes) -> None:
        request = _parse(body)
        spans = _spans(request) if request is not None else None
        kept = _span_dicts(request) if self.keep and request is not None else []
        with self._lock:
            self.kept.extend(kept)
            self.requests += 1
            if spans is None:
                self.undecoded += 1
            else:
                self.span_names.update(name for _, name in spans)
                self.services.update(service for service, _ in spans)

    def snapshot(self) -> dict[str, Any]:
        """`{"requests", "spans", "undecoded", "names", "services"}`; the last
        two count spans by span name and by the `service.name` that sent them."""
        with self._lock:
            return {
                "requests": self.requests,
                "spans": sum(self.span_names.values()),
                "undecoded": self.undecoded,
                "names": dict(self.span_names),
                "services": dict(self.services),
            }


def _parse(body: bytes) -> Any:
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
    except Exception:  # not protobuf, or the proto package is missing
        return None
    return request


def _span_dicts(request: Any) -> list[dict[str, Any]]:
    """Every span in an export as `{trace_id, span_id, parent_id, name,
    start_ns, end_ns, attributes}` (ids in hex, attribute values plain)."""
    return [
        {
            "trace_id": s.trace_id.hex(),
            "span_id": s.span_id.hex(),
            "parent_id": s.parent_span_id.hex() or None,
            "name": s.name,
            "start_ns": s.start_time_unix_nano,
            "end_ns": s.end_time_unix_nano,
            "attributes": {a.key: _plain(a.value) for a in s.attributes},
        }
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for s in scope.spans
    ]


def _plain(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return (
        None if kind in (None, "array_value", "kvlist_value") else getattr(value, kind)
    )


def _spans(request: Any) -> list[tuple[str, str]]:
    out = []
    for resource in request.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource.resource.attributes
                if a.key == "service.name"
            ),
            "",
        )
        out += [
            (service, s.name) for scope in resource.scope_spans for s in scope.spans
        ]
    return out
