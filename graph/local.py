"""The same pipeline wired to engines in this process (`ragserve ask`, benchmarks).

No Ray: each step is a direct engine call (blocking model calls run in a
worker thread so the event loop keeps streaming).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np

from graph.config import RagServingArgs
from graph.engines import make_embedder, make_generator, make_reranker
from graph.pipeline import RagPipeline, Steps
from graph.prompts import get_template
from models.generation import Chunk, GenerationEngine, GenerationRequest
from models.threads import torch_process_env
from retrieval.faiss_index import FaissRetriever
from retrieval.types import Hit, SearchMode


class LocalGraph:
    """All four engines in one process behind the shared `RagPipeline`."""

    def __init__(self, args: RagServingArgs) -> None:
        self.args = args
        # As the graph's replicas get it; OpenMP reads it when torch loads,
        # which the engines below do lazily.
        for key, value in torch_process_env(args.models.embedder.threads).items():
            os.environ.setdefault(key, value)
        self.embedder = make_embedder(args.models.embedder)
        self.retriever = FaissRetriever.load(
            args.retrieval.index_dir,
            self.embedder.model_id,
            self.embedder.dimension,
            args.retrieval.use_gpu,
        )
        self.reranker = make_reranker(
            args.models.reranker, args.models.embedder, embedder=self.embedder
        )
        # In Ray these arrive through the deployment's runtime_env.
        for key, value in args.models.generator.env.items():
            os.environ.setdefault(key, value)
        self.generator: GenerationEngine = make_generator(
            args.models.generator, args.telemetry.otlp_endpoint
        )
        self.pipeline = RagPipeline(
            Steps(
                embed=self._embed,
                retrieve=self._retrieve,
                rerank=self._rerank,
                generate=self._generate,
            ),
            get_template(args.retrieval.prompt_template),
            args.retrieval.max_context_chars,
            SearchMode(args.retrieval.mode, args.retrieval.rrf_k),
        )

    async def start(self) -> None:
        await self.generator.start()

    def shutdown(self) -> None:
        self.generator.shutdown()

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embedder.embed, texts)

    async def _retrieve(
        self, vectors: np.ndarray, k: int, queries: list[str], mode: SearchMode
    ) -> list[list[Hit]]:
        return await asyncio.to_thread(self.retriever.search, vectors, k, queries, mode)

    async def _rerank(
        self, query: str, passages: list[str], dense: list[float] | None = None
    ) -> list[float]:
        return await asyncio.to_thread(self.reranker.score, query, passages, dense)

    def _generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        return self.generator.generate(request)
