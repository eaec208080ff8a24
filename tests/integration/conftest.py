"""One real local Ray Serve with the whole graph for the integration session.

Real embedder (all-MiniLM-L6-v2), real FAISS over docs/, real fusion reranker
and a real vLLM engine running the tiny Llama; traffic on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.otlp_receiver import OTLPReceiver


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Tests that run their own Ray cluster (`own_cluster`) go first among the
    integration tests, before the session graph starts: the two never share
    this machine's CPUs at once."""
    own = [i for i in items if i.get_closest_marker("own_cluster")]
    if not own:
        return
    rest = [i for i in items if not i.get_closest_marker("own_cluster")]
    here = Path(__file__).parent
    first = next(
        (n for n, i in enumerate(rest) if here in Path(str(i.path)).parents),
        len(rest),
    )
    items[:] = rest[:first] + own + rest[first:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def graph_args(
    index_dir: Path, model_dir: Path, port: int, otlp_endpoint: str | None = None
) -> dict[str, Any]:
    return {
        "telemetry": {
            "otlp_endpoint": otlp_endpoint,
            "otlp_protocol": "http/protobuf",
            "sampling_ratio": 1.0,
        },
        "models": {
            "generator": {
                "model": str(model_dir),
                "served_model_name": "tiny-llama",
                "max_model_len": 1024,
                "max_num_seqs": 8,
                "kv_cache_memory_bytes": 64 * 1024 * 1024,
                "default_max_tokens": 16,
            }
        },
        "retrieval": {
            "index_dir": str(index_dir),
            "top_k": 8,
            "top_n": 3,
            "max_context_chars": 2000,
        },
        # No batch window (the default): concurrent test requests share
        # batches because they queue while the model runs.
        "batching": {
            "embedder": {"max_batch_size": 16},
            "reranker": {"max_batch_size": 8},
        },
        "deployments": {
            "generator": {"num_cpus": 0.5},
            # Small limits so a burst past capacity is refused (backpressure test).
            "embedder": {"max_ongoing_requests": 16, "max_queued_requests": 16},
        },
        "server": {"host": "127.0.0.1", "port": port},
        # The session graph runs every step in a deployment of its own (what
        # multi-GPU clusters run; the fault and backpressure tests kill and
        # fill single steps); test_layouts.py runs the step groups.
        "layout": {"preset": "split"},
        # A private tenant store (empty: the API stays open) and audit log.
        "tenants": {
            "db": f"sqlite:///{index_dir.parent / 'tenants.db'}",
            "audit_log": str(index_dir.parent / "audit.jsonl"),
        },
    }


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A real OTLP/HTTP receiver the whole graph exports its traces to."""
    with OTLPReceiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def serve_graph(
    docs_index: Path, tiny_llama: Path, otlp_receiver: OTLPReceiver
) -> Iterator[dict[str, Any]]:
    """Deploy the graph once, tracing on; yield its base URL and args."""
    from graph.cli import server
    from graph.config import RagServingArgs

    port = free_port()
    args = RagServingArgs.load(
        graph_args(docs_index, tiny_llama, port, otlp_receiver.endpoint)
    )
    started = time.perf_counter()
    url = server.start(args, num_cpus=2)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.time() + 300
            while time.time() < deadline:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            else:
                pytest.fail("graph did not become ready in 300 s")
        print(f"\n[graph ready in {time.perf_counter() - started:.1f} s at {url}]")
        yield {"url": url, "args": args}
    finally:
        server.stop()


@pytest.fixture
def client(serve_graph: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_graph["url"], timeout=120) as c:
        yield c


@pytest.fixture
def openai_client(serve_graph: dict[str, Any]):
    from openai import OpenAI

    return OpenAI(base_url=serve_graph["url"] + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def tgraph(
    serve_graph: dict[str, Any],
    docs_index: Path,
    tiny_llama: Path,
    tmp_path_factory: pytest.TempPathFactory,
    otlp_receiver: OTLPReceiver,
) -> Iterator[dict[str, Any]]:
    """The tenants' own two-replica app (`tenants_graph.deploy`), shared by
    `test_tenants` and `test_tenants_ledger`."""
    from tests.integration.tenants_graph import deploy

    yield from deploy(
        serve_graph, docs_index, tiny_llama, tmp_path_factory, otlp_receiver
    )
