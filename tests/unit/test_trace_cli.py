"""`ragserve trace` against Jaeger query-API responses served by a real local server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from graph.cli.main import main

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def jaeger_span(
    span_id: str, name: str, parent: str | None, start_ms: float, ms: float, **tags: Any
) -> dict[str, Any]:
    return {
        "traceID": TRACE_ID,
        "spanID": span_id,
        "operationName": name,
        "references": [{"refType": "CHILD_OF", "traceID": TRACE_ID, "spanID": parent}]
        if parent
        else [],
        "startTime": int(1_700_000_000_000_000 + start_ms * 1000),
        "duration": int(ms * 1000),
        "tags": [
            {
                "key": k,
                "type": "float64" if isinstance(v, float) else "int64",
                "value": v,
            }
            for k, v in tags.items()
        ],
        "processID": "p1",
    }


TRACE = {
    "data": [
        {
            "traceID": TRACE_ID,
            "spans": [
                jaeger_span("a1", "rag.request", None, 0, 900),
                jaeger_span("b1", "rag.embed", "a1", 1, 40, **{"batch.size": 6}),
                jaeger_span(
                    "b2", "queue.batch", "b1", 2, 12, **{"batch.wait_ms": 12.0}
                ),
                jaeger_span("c1", "rag.retrieve", "a1", 45, 5),
                jaeger_span(
                    "d1", "rag.generate", "a1", 60, 830, **{"llm.ttft_ms": 310.5}
                ),
                jaeger_span("d2", "queue.engine", "d1", 61, 250),
                jaeger_span(
                    "d3",
                    "llm_request",
                    "d1",
                    62,
                    820,
                    **{"gpu.memory.allocated_bytes": 3 * 2**30},
                ),
            ],
            "processes": {"p1": {"serviceName": "ragserve", "tags": []}},
        }
    ]
}


@pytest.fixture
def jaeger() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == f"/api/traces/{TRACE_ID}":
                payload, status = json.dumps(TRACE).encode(), 200
            else:
                payload, status = b'{"data":null,"errors":[{"code":404}]}', 404
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_waterfall_marks_the_slowest_wait(jaeger: str, capsys) -> None:
    assert main(["trace", TRACE_ID, "--jaeger", jaeger]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "trace total 900.0 ms"
    names = [line.split()[0] for line in out[1:]]
    assert names == [
        "rag.request",
        "rag.embed",
        "queue.batch",
        "rag.retrieve",
        "rag.generate",
        "queue.engine",
        "llm_request",
    ]
    engine = next(line for line in out if "queue.engine" in line)
    assert engine.endswith("<-- slowest wait")
    assert sum("slowest wait" in line for line in out) == 1
    assert "ttft_ms=310.50" in next(line for line in out if "rag.generate" in line)
    assert "allocated_bytes=3072MiB" in next(
        line for line in out if "llm_request" in line
    )
    # Children are indented under their parents.
    assert next(line for line in out if "queue.batch" in line).startswith(
        "    queue.batch"
    )


def test_unknown_trace_and_unreachable_jaeger(jaeger: str, capsys) -> None:
    assert main(["trace", "ab" * 16, "--jaeger", jaeger]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ragserve: error: trace abab") and "not found" in err
    assert len(err.splitlines()) == 1
    assert main(["trace", "not-hex", "--jaeger", jaeger]) == 2
    assert "not a trace id" in capsys.readouterr().err
    assert main(["trace", TRACE_ID, "--jaeger", "http://127.0.0.1:9"]) == 2
    assert "cannot reach Jaeger" in capsys.readouterr().err
