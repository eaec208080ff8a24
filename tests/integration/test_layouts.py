"""Step groups in a real graph: the default layout (retrieval in the ingress),
`single` (the generator in the ingress too) and a named group that holds the
reranker and the generator in one deployment, each its own app beside the
session graph, answering chat, embeddings and rerank and tracing every step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import graph_args
from tests.otlp_receiver import OTLPReceiver

LAYOUTS: dict[str, dict[str, Any]] = {
    "grouped": {"preset": "retrieval-in-ingress"},
    "single": {"preset": "single"},
    "paired": {
        "groups": [["ingress", "embedder", "retriever"], ["reranker", "generator"]]
    },
}
EXPECTED = {
    "grouped": [["ingress", "embedder", "retriever", "reranker"], ["generator"]],
    "single": [["generator", "ingress", "embedder", "retriever", "reranker"]],
    "paired": [["ingress", "embedder", "retriever"], ["reranker", "generator"]],
}
QUESTION = "How does ragserve batch requests?"


@pytest.fixture(scope="module")
def layout_apps(
    serve_graph: dict[str, Any],
    docs_index: Path,
    tiny_llama: Path,
    otlp_receiver: OTLPReceiver,
) -> Iterator[dict[str, str]]:
    """Each layout as an app of its own in the session's Serve, at `/<name>`."""
    from ray import serve

    from graph.serve.builder import build_app

    port = serve_graph["args"].server.port
    urls = {}
    for name, layout in LAYOUTS.items():
        raw = graph_args(docs_index, tiny_llama, port, otlp_receiver.endpoint)
        raw["layout"] = layout
        raw["deployments"] = {
            "ingress": {"num_cpus": 0.01, "num_replicas": 1},
            "generator": {"num_cpus": 0.01, "num_replicas": 1},
            "reranker": {"num_cpus": 0.01, "num_replicas": 1},
        }
        serve.run(build_app(raw), name=name, route_prefix=f"/{name}", blocking=False)
        urls[name] = serve_graph["url"] + f"/{name}"
    deadline = time.time() + 300
    with httpx.Client(timeout=30) as c:
        for url in urls.values():
            while c.get(f"{url}/ready").status_code != 200:
                assert time.time() < deadline, f"{url} not ready in 300 s"
                time.sleep(1)
    try:
        yield urls
    finally:
        for name in LAYOUTS:  # their engines stop while the next tests run
            serve.delete(name, _blocking=False)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_ready_names_the_live_layout(layout_apps: dict[str, str], name: str) -> None:
    ready = httpx.get(f"{layout_apps[name]}/ready", timeout=30).json()
    assert ready["layout"] == EXPECTED[name]
    assert set(ready["nodes"].values()) == {"ready"}, ready["nodes"]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_streaming_rag_chat_through_each_layout(
    layout_apps: dict[str, str], name: str
) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{layout_apps[name]}/v1", api_key="-", max_retries=0)
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        max_tokens=8,
    )
    chunks = list(stream)
    citations = chunks[0].model_extra["citations"]
    assert citations[0]["doc_id"] == "batching.md"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert sum(len(c.choices[0].delta.content or "") for c in chunks) > 0


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_embeddings_and_rerank_share_batches_in_each_layout(
    layout_apps: dict[str, str], name: str
) -> None:
    url = layout_apps[name]

    def embed(i: int) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/embeddings", json={"input": [f"text {i}"] * 3}, timeout=60
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(embed, range(16)))
    assert {a.status_code for a in answers} == {200}
    assert all(len(a.json()["data"]) == 3 for a in answers)
    assert len(answers[0].json()["data"][0]["embedding"]) == 384
    ranked = httpx.post(
        f"{url}/v1/rerank",
        json={
            "query": "Where are batch sizes set?",
            "documents": ["batching config sets max_batch_size", "tenants have keys"],
        },
        timeout=60,
    ).json()
    assert ranked["results"][0]["index"] == 0


@pytest.mark.parametrize("name", ["grouped", "single"])
def test_each_step_still_has_its_span_in_one_trace(
    layout_apps: dict[str, str], otlp_receiver: OTLPReceiver, name: str
) -> None:
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    response = httpx.post(
        f"{layout_apps[name]}/v1/chat/completions", json=body, timeout=120
    )
    assert response.status_code == 200
    steps = {"rag.request", "rag.embed", "rag.retrieve", "rag.rerank", "rag.generate"}
    spans = otlp_receiver.wait_for(
        response.headers["x-trace-id"], steps | {"queue.batch"}
    )
    names = [s.name for s in spans]
    assert steps <= set(names), names
    (root,) = [s for s in spans if s.name == "rag.request"]
    for step in steps - {"rag.request"}:
        (span,) = [s for s in spans if s.name == step]
        assert span.parent_span_id == root.span_id, step
    # The batched steps still say how long they waited for their batch.
    assert any(s.name == "queue.batch" for s in spans)
