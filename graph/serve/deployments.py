"""One Ray Serve deployment per step, each wrapping one engine.

Each deployment takes its engine factory as a constructor argument (tests may
inject their own), warms the engine up with a real call before it reports
ready, and batches concurrent requests with `ray.serve.batch`, running the
model on the replica's event loop so that what queues meanwhile forms the next
batch (the generator, in `graph.serve.generator_deployment`, relies on vLLM's
continuous batching instead). Every call takes an optional `trace` carrier
and opens its step span under it, with the waits (handle queue, batch
window, engine scheduler) as child spans.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from opentelemetry.trace import Span
from ray import serve

from batching.config import BatchConfig
from batching.queue import Batched, BatchInfo, BatchLog, Queued, run_batch
from graph.engines import make_embedder, make_reranker
from graph.serve.heap import start_heap_trimmer
from models.config import EmbedderConfig, RerankerConfig
from models.embedder import Embedder
from models.reranker import Reranker, RerankItem
from retrieval.types import DENSE, Hit, SearchMode
from telemetry.config import TelemetryConfig
from telemetry.gpu import gpu_memory_attributes
from telemetry.metrics import metrics
from telemetry.tracing import (
    handle_wait_ms,
    record_interval,
    release_of,
    setup_tracing,
    step_span,
)

logger = logging.getLogger("ragserve.deployments")

WARMUP_TEXT = "ragserve warm-up"
Carrier = dict[str, str] | None


def _configure_batching(method: Any, config: BatchConfig) -> None:
    method.set_max_batch_size(config.max_batch_size if config.enabled else 1)
    method.set_batch_wait_timeout_s(
        config.batch_wait_timeout_s if config.enabled else 0.0
    )


def replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (unit tests)
        return f"pid-{os.getpid()}"


class _Node:
    """Shared bookkeeping: tracing set-up, batch log, span attributes."""

    node = "node"

    def _init_node(self, telemetry: TelemetryConfig | None) -> None:
        self.replica_id = replica_id()
        self.batch_log = BatchLog()
        self.ready = False
        setup_tracing(telemetry or TelemetryConfig(), self.node, self.replica_id)
        start_heap_trimmer()

    def _attrs(self) -> dict[str, Any]:
        return {"deployment": self.node, "replica.id": self.replica_id}

    def _observe(
        self,
        span: Span,
        handle_ms: float | None,
        batched: Batched[Any],
        release: str = "",
    ) -> Any:
        """Record one request's waits and batch: log, metrics (labelled with
        the request's release), span attributes and wait spans."""
        info: BatchInfo = batched.info
        self.batch_log.record(info)
        metrics().batch_size(self.node, info.size, release)
        metrics().queue_wait(self.node, "batch", info.wait_ms, release)
        if handle_ms is not None:
            metrics().queue_wait(self.node, "handle", handle_ms, release)
        gpu = gpu_memory_attributes()
        metrics().gpu_memory(self.node, gpu)
        if span.is_recording():
            span.set_attributes(
                {
                    "batch.size": info.size,
                    "batch.wait_ms": round(info.wait_ms, 3),
                    **gpu,
                }
            )
            batch_attrs = {"batch.size": info.size, "batch.wait_ms": info.wait_ms}
            record_interval(
                "queue.batch",
                info.enqueued_wall_ns,
                info.batch_start_ns,
                parent=span,
                attributes=batch_attrs,
            )
            record_interval(
                f"{self.node}.run",
                info.batch_start_ns,
                info.batch_end_ns,
                parent=span,
                attributes={"batch.size": info.size, **gpu},
            )
        return batched.value()

    async def stats(self) -> dict[str, Any]:
        """Batch sizes and queue waits seen by this replica."""
        return {
            "node": self.node,
            "replica": self.replica_id,
            **self.batch_log.summary(),
        }

    async def readiness(self) -> str:
        return "ready" if self.ready else "warming"


@serve.deployment
class EmbedderDeployment(_Node):
    """Embeds texts; concurrent requests share forward passes."""

    node = "embedder"

    def __init__(
        self,
        config: EmbedderConfig,
        batching: BatchConfig,
        telemetry: TelemetryConfig | None = None,
        engine_factory: Callable[[EmbedderConfig], Embedder] = make_embedder,
    ) -> None:
        self._init_node(telemetry)
        self.engine = engine_factory(config)
        _configure_batching(self._embed_batch, batching)
        self.engine.embed([WARMUP_TEXT])
        self.ready = True

    async def describe(self) -> dict[str, Any]:
        return {"model_id": self.engine.model_id, "dimension": self.engine.dimension}

    async def embed(self, texts: list[str], trace: Carrier = None) -> np.ndarray:
        vectors, _ = await self.embed_with_usage(texts, trace)
        return vectors

    async def embed_with_usage(
        self, texts: list[str], trace: Carrier = None
    ) -> tuple[np.ndarray, int]:
        handle_ms = handle_wait_ms(trace)
        with step_span(
            "rag.embed", trace, {**self._attrs(), "texts": len(texts)}
        ) as span:
            batched = await self._embed_batch(Queued.now(texts))
            return self._observe(span, handle_ms, batched, release_of(trace))

    @serve.batch  # size and window: batching config, set in __init__
    async def _embed_batch(
        self, items: list[Queued[list[str]]]
    ) -> list[Batched[tuple[np.ndarray, int]]]:
        return run_batch(items, self._embed_many)

    def _embed_many(self, requests: list[list[str]]) -> list[tuple[np.ndarray, int]]:
        flat = [text for texts in requests for text in texts]
        vectors, counts = self._embed_and_count(flat)
        out, start = [], 0
        for texts in requests:
            end = start + len(texts)
            out.append((vectors[start:end], int(sum(counts[start:end]))))
            start = end
        return out

    def _embed_and_count(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return self.engine.embed_with_counts(texts)


@dataclass(frozen=True)
class _Search:
    """One search request in the retriever's batch queue."""

    vectors: np.ndarray
    k: int
    queries: list[str] | None
    mode: SearchMode


@serve.deployment
class RetrieverDeployment(_Node):
    """FAISS search; concurrent queries share one index scan."""

    node = "retriever"

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        index_dir: str,
        embedder: Any,
        batching: BatchConfig,
        use_gpu: Literal["auto", "never", "always"] = "auto",
        telemetry: TelemetryConfig | None = None,
    ) -> None:
        from retrieval.faiss_index import FaissRetriever

        self._init_node(telemetry)
        _configure_batching(self._search_batch, batching)
        # The index must match the embedder the graph runs, not just the config.
        info = await embedder.describe.remote()
        self.retriever = await asyncio.to_thread(
            FaissRetriever.load, index_dir, info["model_id"], info["dimension"], use_gpu
        )
        self.retriever.search(np.zeros((1, info["dimension"]), dtype=np.float32), 1)
        self.ready = True

    async def describe(self) -> dict[str, Any]:
        return self.retriever.manifest.model_dump(mode="json", exclude={"documents"})

    async def search(
        self,
        vectors: np.ndarray,
        k: int,
        queries: list[str] | None = None,
        mode: SearchMode = DENSE,
        trace: Carrier = None,
    ) -> list[list[Hit]]:
        handle_ms = handle_wait_ms(trace)
        attrs = {**self._attrs(), "top_k": k, "mode": mode.mode}
        with step_span("rag.retrieve", trace, attrs) as span:
            batched = await self._search_batch(
                Queued.now(_Search(vectors, k, queries, mode))
            )
            return self._observe(span, handle_ms, batched, release_of(trace))

    @serve.batch  # size and window: batching config, set in __init__
    async def _search_batch(
        self, items: list[Queued[_Search]]
    ) -> list[Batched[list[list[Hit]]]]:
        return run_batch(items, self._search_many)

    def _search_many(self, requests: list[_Search]) -> list[list[list[Hit]]]:
        """One index scan per mode among the batch's requests."""
        out: list[list[list[Hit]]] = [[] for _ in requests]
        for mode in dict.fromkeys(r.mode for r in requests):
            picked = [i for i, r in enumerate(requests) if r.mode == mode]
            group = [requests[i] for i in picked]
            stacked = np.concatenate(
                [np.asarray(r.vectors, dtype=np.float32) for r in group]
            )
            texts = (
                None
                if any(r.queries is None for r in group)
                else [t for r in group for t in r.queries or []]
            )
            hits = self.retriever.search(stacked, max(r.k for r in group), texts, mode)
            start = 0
            for i, r in zip(picked, group, strict=True):
                out[i] = [row[: r.k] for row in hits[start : start + len(r.vectors)]]
                start += len(r.vectors)
        return out


@serve.deployment
class RerankerDeployment(_Node):
    """Scores passages; pairs from concurrent requests share token-budget batches."""

    node = "reranker"

    def __init__(
        self,
        config: RerankerConfig,
        embedder_config: EmbedderConfig,
        batching: BatchConfig,
        telemetry: TelemetryConfig | None = None,
        engine_factory: Callable[
            [RerankerConfig, EmbedderConfig], Reranker
        ] = make_reranker,
    ) -> None:
        self._init_node(telemetry)
        self.engine = engine_factory(config, embedder_config)
        _configure_batching(self._rerank_batch, batching)
        self.engine.score(WARMUP_TEXT, [WARMUP_TEXT, "another passage"])
        self.ready = True

    async def describe(self) -> dict[str, Any]:
        return {"model_id": self.engine.model_id}

    async def rerank(
        self,
        query: str,
        passages: list[str],
        dense: list[float] | None = None,
        trace: Carrier = None,
    ) -> list[float]:
        """Scores for `passages`; `dense`: their retrieval cosines, if known."""
        if not passages:
            return []
        attrs = {**self._attrs(), "passages": len(passages)}
        handle_ms = handle_wait_ms(trace)
        with step_span("rag.rerank", trace, attrs) as span:
            batched = await self._rerank_batch(Queued.now((query, passages, dense)))
            return self._observe(span, handle_ms, batched, release_of(trace))

    @serve.batch  # size and window: batching config, set in __init__
    async def _rerank_batch(
        self, items: list[Queued[RerankItem]]
    ) -> list[Batched[list[float]]]:
        return run_batch(items, self.engine.score_many)
