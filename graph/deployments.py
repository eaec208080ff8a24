"""One Ray Serve deployment per step, each wrapping one engine.

Each deployment takes its engine factory as a constructor argument (tests may
inject their own), warms the engine up with a real call before it reports
ready, and batches concurrent requests with `ray.serve.batch` (the generator
relies on vLLM's continuous batching instead).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np
from ray import serve

from batching.config import BatchConfig
from batching.queue import Batched, BatchLog, Queued, run_batch
from graph.engines import make_embedder, make_generator, make_reranker
from models.config import EmbedderConfig, GeneratorConfig, RerankerConfig
from models.embedder import Embedder
from models.generation import Chunk, GenerationEngine, GenerationRequest
from models.reranker import Reranker
from retrieval.types import Hit

logger = logging.getLogger("ragserve.deployments")

WARMUP_TEXT = "ragserve warm-up"


def _configure_batching(method: Any, config: BatchConfig) -> None:
    method.set_max_batch_size(config.max_batch_size if config.enabled else 1)
    method.set_batch_wait_timeout_s(
        config.batch_wait_timeout_s if config.enabled else 0.0
    )


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (unit tests)
        return f"pid-{os.getpid()}"


class _BatchedNode:
    """Shared bookkeeping for batched nodes."""

    node = "node"

    def __init__(self) -> None:
        self.batch_log = BatchLog()
        self.ready = False

    def _record(self, batched: Batched[Any]) -> Any:
        self.batch_log.record(batched.info)
        return batched.result

    async def stats(self) -> dict[str, Any]:
        """Batch sizes and queue waits seen by this replica."""
        return {"node": self.node, "replica": _replica_id(), **self.batch_log.summary()}

    async def readiness(self) -> str:
        return "ready" if self.ready else "warming"


@serve.deployment
class EmbedderDeployment(_BatchedNode):
    """Embeds texts; concurrent requests share forward passes."""

    node = "embedder"

    def __init__(
        self,
        config: EmbedderConfig,
        batching: BatchConfig,
        engine_factory: Callable[[EmbedderConfig], Embedder] = make_embedder,
    ) -> None:
        super().__init__()
        self.engine = engine_factory(config)
        _configure_batching(self._embed_batch, batching)
        self.engine.embed([WARMUP_TEXT])
        self.ready = True

    async def describe(self) -> dict[str, Any]:
        return {"model_id": self.engine.model_id, "dimension": self.engine.dimension}

    async def embed(self, texts: list[str]) -> np.ndarray:
        vectors, _ = self._record(await self._embed_batch(Queued.now(texts)))
        return vectors

    async def embed_with_usage(self, texts: list[str]) -> tuple[np.ndarray, int]:
        return self._record(await self._embed_batch(Queued.now(texts)))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _embed_batch(
        self, items: list[Queued[list[str]]]
    ) -> list[Batched[tuple[np.ndarray, int]]]:
        return await run_batch(items, self._embed_many)

    async def _embed_many(
        self, requests: list[list[str]]
    ) -> list[tuple[np.ndarray, int]]:
        flat = [text for texts in requests for text in texts]
        vectors, counts = await asyncio.to_thread(self._embed_and_count, flat)
        out, start = [], 0
        for texts in requests:
            end = start + len(texts)
            out.append((vectors[start:end], int(sum(counts[start:end]))))
            start = end
        return out

    def _embed_and_count(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        return self.engine.embed(texts), self.engine.count_tokens(texts)


@serve.deployment
class RetrieverDeployment(_BatchedNode):
    """FAISS search; concurrent queries share one index scan."""

    node = "retriever"

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        index_dir: str,
        embedder: Any,
        batching: BatchConfig,
        use_gpu: Literal["auto", "never", "always"] = "auto",
    ) -> None:
        from retrieval.index import FaissRetriever

        super().__init__()
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

    async def search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        return self._record(await self._search_batch(Queued.now((vectors, k))))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _search_batch(
        self, items: list[Queued[tuple[np.ndarray, int]]]
    ) -> list[Batched[list[list[Hit]]]]:
        return await run_batch(items, self._search_many)

    async def _search_many(
        self, requests: list[tuple[np.ndarray, int]]
    ) -> list[list[list[Hit]]]:
        stacked = np.concatenate([np.asarray(v, dtype=np.float32) for v, _ in requests])
        k = max(k for _, k in requests)
        hits = await asyncio.to_thread(self.retriever.search, stacked, k)
        out, start = [], 0
        for vectors, req_k in requests:
            out.append([row[:req_k] for row in hits[start : start + len(vectors)]])
            start += len(vectors)
        return out


@serve.deployment
class RerankerDeployment(_BatchedNode):
    """Scores passages; pairs from concurrent requests share token-budget batches."""

    node = "reranker"

    def __init__(
        self,
        config: RerankerConfig,
        embedder_config: EmbedderConfig,
        batching: BatchConfig,
        engine_factory: Callable[
            [RerankerConfig, EmbedderConfig], Reranker
        ] = make_reranker,
    ) -> None:
        super().__init__()
        self.engine = engine_factory(config, embedder_config)
        _configure_batching(self._rerank_batch, batching)
        self.engine.score(WARMUP_TEXT, [WARMUP_TEXT, "another passage"])
        self.ready = True

    async def describe(self) -> dict[str, Any]:
        return {"model_id": self.engine.model_id}

    async def rerank(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        return self._record(await self._rerank_batch(Queued.now((query, passages))))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _rerank_batch(
        self, items: list[Queued[tuple[str, list[str]]]]
    ) -> list[Batched[list[float]]]:
        return await run_batch(items, self._score_many)

    async def _score_many(
        self, requests: list[tuple[str, list[str]]]
    ) -> list[list[float]]:
        return await asyncio.to_thread(self.engine.score_many, requests)


@serve.deployment
class GeneratorDeployment:
    """Streams completions from one vLLM engine (continuous batching inside)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        config: GeneratorConfig,
        otlp_endpoint: str | None = None,
        engine_factory: Callable[
            [GeneratorConfig, str | None], GenerationEngine
        ] = make_generator,
    ) -> None:
        self.engine = engine_factory(config, otlp_endpoint)
        await self.engine.start()

    async def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.engine.model_id,
            "max_model_len": self.engine.max_model_len,
        }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        async for chunk in self.engine.generate(request):
            yield chunk

    async def stats(self) -> dict[str, Any]:
        return {
            "node": "generator",
            "replica": _replica_id(),
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
