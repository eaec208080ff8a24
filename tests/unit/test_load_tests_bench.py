"""Around a load test run: targets are loopback only, the GPU profile fits two
GPUs, and the bench tells whether tracing reached its OTLP sink."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from load_tests.cli import EXIT_USAGE
from load_tests.runner import LoadTestError, check_loopback

REPO = Path(__file__).resolve().parents[2]


# --- loopback only --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://127.1.2.3:1",
        "http://localhost:8000/",
        "http://[::1]:8000",
    ],
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8000",
        "http://192.168.1.1",
        "https://example.com",
        "http://127.0.0.1.nip.io:8000",
        "http://[2001:db8::1]:80",
        "ftp://127.0.0.1/",
    ],
)
def test_other_targets_are_refused(url: str) -> None:
    with pytest.raises(LoadTestError):
        check_loopback(url)


def test_cli_refuses_a_remote_target_before_sending(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "load_tests", "run", "--url", "http://10.1.2.3:8000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_USAGE
    assert "loopback only" in proc.stderr
    assert proc.stderr.count("\n") == 1


# --- the GPU profile --------------------------------------------------------------


def test_gpu_profile_loads_and_fits_two_gpus() -> None:
    from graph.config import RagServingArgs

    args = RagServingArgs.load(REPO / "configs" / "gpu.yaml")
    nodes = args.deployments
    assert nodes.generator.num_gpus == 1.0
    # Embedder and reranker share the second GPU even at their largest.
    shared = sum(
        node.num_gpus * node.autoscaling.max_replicas
        for node in (nodes.embedder, nodes.reranker)
    )
    assert 0 < shared <= 1.0
    assert args.models.generator.max_num_seqs == 128
    assert args.models.reranker.kind == "cross-encoder"


# --- tracing detection ------------------------------------------------------------


def _export(service: str, names: list[str]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    attr = resource.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", service
    scope = resource.scope_spans.add()
    for name in names:
        scope.spans.add().name = name
    return request.SerializeToString()


def test_the_bench_tells_graph_tracing_from_vllm_only_and_from_none() -> None:
    import httpx

    from load_tests.bench import tracing_note
    from load_tests.otlp_sink import OTLPSink

    sink = OTLPSink().start()
    try:
        assert "no spans reached the sink" in tracing_note(sink.snapshot())
        headers = {"Content-Type": "application/x-protobuf"}
        with httpx.Client(trust_env=False) as client:
            answer = client.post(
                sink.endpoint,
                content=_export("unknown_service:python", ["llm_request"]),
                headers=headers,
            )
            assert answer.status_code == 200
            vllm_only = tracing_note(sink.snapshot())
            client.post(
                sink.endpoint,
                content=_export("traced", ["rag.request", "rag.embed"]),
                headers=headers,
            )
            traced = tracing_note(sink.snapshot())
    finally:
        sink.stop()
    assert vllm_only.startswith("tracing not yet implemented in the graph")
    assert "llm_request" in vllm_only
    assert traced.startswith("tracing on: the sink received 3 spans")
    assert "rag.request x1" in traced
