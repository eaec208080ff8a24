"""The ingress deployment: the OpenAI API in front of the step deployments.

Wires the pipeline's steps to `DeploymentHandle` calls; the routes themselves
live in `graph.routes`, the hops in `graph.handles`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve

from graph.api import create_app
from graph.config import RagServingArgs
from graph.context import ServingContext, api_keys, model_names
from graph.deployments import replica_id
from graph.handles import call_step, stream_generate
from graph.pipeline import RagPipeline, Steps
from graph.prompts import get_template
from graph.resilience import name_missing, replica_lost
from models.generation import Chunk, GenerationRequest
from retrieval.types import Hit
from telemetry.tracing import setup_tracing

READINESS_TIMEOUT_S = 5.0


@serve.deployment
@serve.ingress()
class IngressDeployment:
    """FastAPI ingress speaking the OpenAI protocol."""

    def __init__(
        self,
        embedder: Any,
        retriever: Any,
        reranker: Any,
        generator: Any,
        args: RagServingArgs,
    ) -> None:
        self._nodes = {
            "embedder": embedder,
            "retriever": retriever,
            "reranker": reranker,
            "generator": generator,
        }

        setup_tracing(args.telemetry, "ingress", replica_id())

        # Each hop carries the W3C context (and the send time) explicitly, so
        # the step spans join the request's trace whatever Ray propagates;
        # each waits within the request's deadline (graph.resilience).
        policy = args.resilience

        async def embed(texts: list[str]) -> np.ndarray:
            return await call_step(embedder.embed, texts, config=policy)

        async def embed_with_usage(texts: list[str]) -> tuple[np.ndarray, int]:
            return await call_step(embedder.embed_with_usage, texts, config=policy)

        async def retrieve(vectors: np.ndarray, k: int) -> list[list[Hit]]:
            return await call_step(retriever.search, vectors, k, config=policy)

        async def rerank(
            query: str, passages: list[str], dense: list[float] | None = None
        ) -> list[float]:
            return await call_step(
                reranker.rerank, query, passages, dense, config=policy
            )

        def generate(request: GenerationRequest) -> AsyncIterator[Chunk]:
            return stream_generate(generator, request, policy)

        pipeline = RagPipeline(
            Steps(embed=embed, retrieve=retrieve, rerank=rerank, generate=generate),
            get_template(args.retrieval.prompt_template),
            args.retrieval.max_context_chars,
        )
        self.ctx = ServingContext(
            args=args,
            pipeline=pipeline,
            names=model_names(args),
            embed_with_usage=embed_with_usage,
            readiness=self.readiness,
            api_keys=api_keys(args),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.ctx)

    async def readiness(self) -> dict[str, str]:
        async def one(handle: Any) -> str:
            try:
                return await asyncio.wait_for(
                    handle.readiness.remote(), READINESS_TIMEOUT_S
                )
            except TimeoutError:
                return "timeout"
            except Exception as exc:
                if replica_lost(exc):
                    return "unavailable: replica lost"
                return f"error: {type(exc).__name__}"

        names = list(self._nodes)
        states = await asyncio.gather(*(one(self._nodes[n]) for n in names))
        return await name_missing(dict(zip(names, states, strict=True)))
