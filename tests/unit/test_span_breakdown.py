"""The tenants benchmark's trace reading: spans exported over real OTLP/HTTP
to the bench's sink, read back as each request's milestones."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from load_tests import span_breakdown, tenants_bench
from load_tests.otlp_sink import OTLPSink
from tests.unit.test_tenants_bench import _ns

MS = 1_000_000


def _request(tracer: trace.Tracer, tenant: str, t0: int, slot_ms: int) -> None:
    """One request's spans as the graph makes them, at known times."""
    root = tracer.start_span("rag.request", start_time=t0)
    root.set_attribute("tenant", tenant)
    ctx = trace.set_span_in_context(root)
    embed = tracer.start_span("rag.embed", ctx, start_time=t0)
    inner = trace.set_span_in_context(embed)
    tracer.start_span("queue.handle", inner, start_time=t0).end(t0 + 2 * MS)
    tracer.start_span("queue.batch", inner, start_time=t0 + 2 * MS).end(t0 + 4 * MS)
    tracer.start_span("embedder.run", inner, start_time=t0 + 4 * MS).end(t0 + 10 * MS)
    embed.end(t0 + 10 * MS)
    for name, start, end in (
        ("rag.retrieve", 10, 15),
        ("rag.rerank", 15, 40),
        ("queue.fair_share", 40, 40 + slot_ms),
    ):
        tracer.start_span(name, ctx, start_time=t0 + start * MS).end(t0 + end * MS)
    gen = tracer.start_span("rag.generate", ctx, start_time=t0 + (41 + slot_ms) * MS)
    gen.set_attribute("llm.ttft_ms", 100.0)
    inner = trace.set_span_in_context(gen)
    picked = t0 + (45 + slot_ms) * MS
    tracer.start_span("queue.handle", inner, start_time=gen.start_time).end(picked)
    tracer.start_span("queue.engine", inner, start_time=picked).end(picked + 30 * MS)
    gen.end(picked + 300 * MS)
    root.end(picked + 310 * MS)


@pytest.fixture
def sink():
    s = OTLPSink(keep=True).start()
    yield s
    s.stop()


def test_milestones_from_spans_sent_over_otlp(sink: OTLPSink) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=sink.endpoint))
    )
    tracer = provider.get_tracer("test")
    base = 1_800_000_000 * 10**9
    _request(tracer, "B", base, slot_ms=0)
    _request(tracer, "B", base + 10**9, slot_ms=0)
    _request(tracer, "B", base + 5 * 10**9, slot_ms=200)
    _request(tracer, "A", base + 5 * 10**9, slot_ms=50)
    provider.shutdown()

    rows = span_breakdown.request_milestones(sink.kept)
    assert [r["tenant"] for r in rows] == ["B", "B", "B", "A"]
    first = rows[0]
    assert first["at_embedder"] == 2 and first["embed_batch"] == 4
    assert first["embedded"] == 10 and first["reranked"] == 40
    assert first["slot"] == 40 and first["at_generator"] == 45
    assert first["scheduled"] == 75 and first["first_token"] == 145

    windows = {
        "B_alone": [base, base + 2 * 10**9],
        "both": [base + 4 * 10**9, base + 6 * 10**9],
    }
    phases = span_breakdown.by_phase(sink.kept, windows)
    assert phases["B alone"]["first_token"]["n"] == 2
    assert phases["B alone"]["first_token"]["p50_ms"] == 145
    # next to A, B waited 200 ms for its slot and all of it shows downstream
    assert phases["B next to A"]["slot"]["p50_ms"] == 240
    assert phases["B next to A"]["first_token"]["p50_ms"] == 345
    assert phases["A next to B"]["slot"]["p50_ms"] == 90
    text = "\n".join(span_breakdown.section(phases))
    assert "| first_token | 145 / 145 | 345 / 345 | 195 / 195 |" in text
    assert span_breakdown.section(None) == []


def test_trace_flag_points_the_graph_at_the_sink(tmp_path: Path) -> None:
    cfg = tenants_bench._config(_ns(), tmp_path, 8011, "http://127.0.0.1:9/v1/traces")
    assert cfg["telemetry"] == {
        "otlp_endpoint": "http://127.0.0.1:9/v1/traces",
        "otlp_protocol": "http/protobuf",
    }
    assert "telemetry" not in tenants_bench._config(_ns(), tmp_path, 8011)
