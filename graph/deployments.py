"""One Ray Serve deployment per step, each wrapping one engine.

Each deployment takes its engine factory as a constructor argument (tests may
inject their own), warms the engine up with a real call before it reports
ready, and batches concurrent requests with `ray.serve.batch`, running the
model on the replica's event loop so that what queues meanwhile forms the next
batch (the generator relies on vLLM's continuous batching instead). Every
call takes an optional `trace` carrier and opens its step span under it, with
the waits (handle queue, batch window, engine scheduler) as child spans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np
from opentelemetry.trace import Span
from ray import serve

from batching.config import BatchConfig
from batching.queue import Batched, BatchInfo, BatchLog, Queued, run_batch
from batching.stream import coalesce
from graph.engines import make_embedder, make_generator, make_reranker
from models.config import EmbedderConfig, GeneratorConfig, RerankerConfig
from models.embedder import Embedder
from models.generation import Chunk, GenerationEngine, GenerationRequest
from models.reranker import Reranker, RerankItem
from retrieval.types import Hit
from telemetry.config import TelemetryConfig
from telemetry.gpu import child_pids, gpu_memory_attributes
from telemetry.metrics import metrics
from telemetry.tracing import (
    handle_wait_ms,
    record_interval,
    release_of,
    setup_tracing,
    start_step_span,
    step_span,
    trace_headers,
    tracing_enabled,
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
        return batched.result

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
        from retrieval.index import FaissRetriever

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
        self, vectors: np.ndarray, k: int, trace: Carrier = None
    ) -> list[list[Hit]]:
        handle_ms = handle_wait_ms(trace)
        with step_span("rag.retrieve", trace, {**self._attrs(), "top_k": k}) as span:
            batched = await self._search_batch(Queued.now((vectors, k)))
            return self._observe(span, handle_ms, batched, release_of(trace))

    @serve.batch  # size and window: batching config, set in __init__
    async def _search_batch(
        self, items: list[Queued[tuple[np.ndarray, int]]]
    ) -> list[Batched[list[list[Hit]]]]:
        return run_batch(items, self._search_many)

    def _search_many(
        self, requests: list[tuple[np.ndarray, int]]
    ) -> list[list[list[Hit]]]:
        stacked = np.concatenate([np.asarray(v, dtype=np.float32) for v, _ in requests])
        k = max(k for _, k in requests)
        hits = self.retriever.search(stacked, k)
        out, start = [], 0
        for vectors, req_k in requests:
            out.append([row[:req_k] for row in hits[start : start + len(vectors)]])
            start += len(vectors)
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


@serve.deployment
class GeneratorDeployment:
    """Streams completions from one vLLM engine (continuous batching inside)."""

    node = "generator"

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: GeneratorConfig,
        telemetry: TelemetryConfig | None = None,
        engine_factory: Callable[
            [GeneratorConfig, str | None], GenerationEngine
        ] = make_generator,
    ) -> None:
        self.replica_id = replica_id()
        telemetry = telemetry or TelemetryConfig()
        setup_tracing(telemetry, self.node, self.replica_id)
        from telemetry.tracing import resolve_endpoint

        endpoint, protocol = resolve_endpoint(telemetry)
        if (
            endpoint
            and protocol == "http/protobuf"
            and not endpoint.endswith("/v1/traces")
        ):
            # vLLM hands the endpoint to the HTTP exporter as the full URL.
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        self.engine = engine_factory(config, endpoint)
        self.coalesce_s = config.stream_coalesce_ms / 1000.0
        await self.engine.start()

    async def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.engine.model_id,
            "max_model_len": self.engine.max_model_len,
        }

    async def generate(
        self, request: GenerationRequest, trace: Carrier = None
    ) -> AsyncIterator[list[Chunk]]:
        """The chunks of `request`, coalesced for the hop to the ingress: the
        first alone at once, then what the engine made in each short window
        (`stream_coalesce_ms`), one Ray object per window instead of per
        token."""
        chunks = self._generate(request, trace)
        async for batch in coalesce(chunks, self.coalesce_s):
            yield batch

    async def _generate(
        self, request: GenerationRequest, trace: Carrier
    ) -> AsyncIterator[Chunk]:
        # The span is ended by hand: a context manager held across `yield`
        # would leak the current-span context into the consumer.
        handle_ms = handle_wait_ms(trace)
        if handle_ms is not None:
            metrics().queue_wait(self.node, "handle", handle_ms, release_of(trace))
        span = start_step_span(
            "rag.generate",
            trace,
            {"deployment": self.node, "replica.id": self.replica_id},
        )
        if tracing_enabled() and span.is_recording():
            request.trace_headers = trace_headers(span)
        submitted = time.time_ns()
        first: int | None = None
        last = submitted
        gaps: list[float] = []
        final: Chunk | None = None
        try:
            async for chunk in self.engine.generate(request):
                stamp = time.time_ns()
                if chunk.text:
                    if first is None:
                        first = stamp
                    else:
                        gaps.append((stamp - last) / 1e6)
                    last = stamp
                if chunk.finish_reason is not None:
                    final = chunk
                yield chunk
        except BaseException as exc:
            if not isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            else:
                span.set_attribute("request.cancelled", True)
            raise
        finally:
            ttft_ms = (first - submitted) / 1e6 if first is not None else None
            tokens = final.completion_tokens if final else 0
            metrics().generation(ttft_ms, gaps, tokens, release_of(trace))
            await self._finish_span(span, submitted, ttft_ms, final, release_of(trace))

    async def _finish_span(
        self,
        span: Span,
        submitted: int,
        ttft_ms: float | None,
        final: Chunk | None,
        release: str = "",
    ) -> None:
        try:
            stats = await self.engine.stats()
            if "kv_cache_usage" in stats:
                metrics().kv_cache_usage(stats["kv_cache_usage"])
            # The model lives in vLLM's EngineCore, a child of this replica.
            gpu = gpu_memory_attributes(child_pids())
            metrics().gpu_memory(self.node, gpu)
            queue_s = final.metrics.get("queue_s") if final is not None else None
            if queue_s is not None:
                metrics().queue_wait(self.node, "engine", queue_s * 1000, release)
            if not span.is_recording():
                return
            attrs: dict[str, Any] = {**gpu}
            if ttft_ms is not None:
                attrs["llm.ttft_ms"] = round(ttft_ms, 3)
            if "kv_cache_usage" in stats:
                attrs["llm.kv_cache_usage"] = float(stats["kv_cache_usage"])
            if stats.get("kv_cache_tokens"):
                attrs["llm.kv_cache_tokens"] = int(stats["kv_cache_tokens"])
            if final is not None:
                attrs["llm.prompt_tokens"] = final.prompt_tokens
                attrs["llm.completion_tokens"] = final.completion_tokens
                attrs["llm.finish_reason"] = final.finish_reason or ""
                if queue_s is not None:
                    attrs["llm.queue_ms"] = round(queue_s * 1000, 3)
                    # vLLM reports the scheduler wait as a duration; it starts
                    # when the request reached the engine.
                    record_interval(
                        "queue.engine",
                        submitted,
                        submitted + int(queue_s * 1e9),
                        parent=span,
                        attributes={"queue.wait_ms": queue_s * 1000},
                    )
            span.set_attributes(attrs)
        finally:
            span.end()

    async def stats(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "replica": self.replica_id,
            **(await self.engine.stats()),
        }

    async def readiness(self) -> str:
        await self.engine.check_health()
        return "ready"

    async def check_health(self) -> None:
        """Serve's health check: a dead engine restarts the replica."""
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
