"""`ragserve trace TRACE_ID`: one trace from Jaeger's HTTP API as a terminal waterfall.

Knows Jaeger's query API JSON (`GET /api/traces/{id}`) and how to draw it;
knows nothing of how the spans were produced.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

WAIT_PREFIX = "queue."
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{1,32}$")


class TraceError(Exception):
    """A one-line, user-facing problem fetching or reading a trace."""


@dataclass
class SpanRow:
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    children: list[SpanRow] = field(default_factory=list)


def fetch_trace(
    jaeger_url: str, trace_id: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    """GET `{jaeger_url}/api/traces/{trace_id}` and return the trace object."""
    if not _TRACE_ID.match(trace_id):
        raise TraceError(f"{trace_id!r} is not a trace id (up to 32 hex digits)")
    url = f"{jaeger_url.rstrip('/')}/api/traces/{trace_id.lower()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise TraceError(
                f"trace {trace_id} not found in Jaeger at {jaeger_url} (not sampled, "
                "not flushed yet, or expired)"
            ) from None
        raise TraceError(f"Jaeger at {jaeger_url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TraceError(
            f"cannot reach Jaeger at {jaeger_url} ({reason}); start it with "
            "'make jaeger' or pass --jaeger URL"
        ) from None
    except json.JSONDecodeError:
        raise TraceError(f"Jaeger at {jaeger_url} did not answer JSON") from None
    data = body.get("data") or []
    if not data:
        raise TraceError(f"trace {trace_id} not found in Jaeger at {jaeger_url}")
    return dict(data[0])


def parse_trace(trace: dict[str, Any]) -> list[SpanRow]:
    """Jaeger's trace JSON -> root rows with their children, by start time."""
    processes = trace.get("processes", {})
    rows: dict[str, SpanRow] = {}
    for span in trace.get("spans", []):
        parent = next(
            (
                r["spanID"]
                for r in span.get("references", [])
                if r.get("refType") == "CHILD_OF"
            ),
            None,
        )
        process = processes.get(span.get("processID"), {})
        rows[span["spanID"]] = SpanRow(
            span_id=span["spanID"],
            parent_id=parent,
            name=span["operationName"],
            service=process.get("serviceName", "?"),
            start_us=int(span["startTime"]),
            duration_us=int(span["duration"]),
            tags={t["key"]: t.get("value") for t in span.get("tags", [])},
        )
    roots: list[SpanRow] = []
    for row in rows.values():
        parent = rows.get(row.parent_id or "")
        (parent.children if parent else roots).append(row)
    for row in rows.values():
        row.children.sort(key=lambda r: r.start_us)
    return sorted(roots, key=lambda r: r.start_us)


_SHOWN_TAGS = (
    "deployment",
    "batch.size",
    "batch.wait_ms",
    "llm.ttft_ms",
    "llm.prompt_tokens",
    "llm.completion_tokens",
    "llm.kv_cache_usage",
    "gpu.memory.process_bytes",
    "gpu.memory.allocated_bytes",
    "gpu.memory.reserved_bytes",
    "gpu.memory.used_bytes",
)


def render_waterfall(roots: list[SpanRow], width: int = 40) -> str:
    """Indented hops with a time bar; the slowest wait is marked."""
    flat: list[tuple[int, SpanRow]] = []

    def walk(row: SpanRow, depth: int) -> None:
        flat.append((depth, row))
        for child in row.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    if not flat:
        return "(empty trace)"
    t0 = min(r.start_us for _, r in flat)
    t1 = max(r.start_us + r.duration_us for _, r in flat)
    span_us = max(t1 - t0, 1)
    waits = [r for _, r in flat if r.name.startswith(WAIT_PREFIX)]
    slowest = max(waits, key=lambda r: r.duration_us) if waits else None
    name_w = max(len("  " * d + r.name) for d, r in flat) + 2
    lines = [f"trace total {span_us / 1000:.1f} ms"]
    for depth, row in flat:
        start = int((row.start_us - t0) / span_us * width)
        length = max(1, int(row.duration_us / span_us * width))
        bar = " " * start + ("░" if row.name.startswith(WAIT_PREFIX) else "█") * length
        label = ("  " * depth + row.name).ljust(name_w)
        extras = [
            f"{k.removeprefix('gpu.memory.')}={_fmt(k, row.tags[k])}"
            for k in _SHOWN_TAGS
            if k in row.tags and k != "deployment"
        ]
        mark = "  <-- slowest wait" if row is slowest else ""
        lines.append(
            f"{label}{bar.ljust(width)} {row.duration_us / 1000:9.1f} ms  "
            f"{' '.join(extras)}{mark}".rstrip()
        )
    return "\n".join(lines)


def _fmt(key: str, value: Any) -> str:
    if key.endswith("_bytes"):
        return f"{int(value) / 2**20:.0f}MiB"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
