"""The ingress deployment: the OpenAI API in front of the step deployments.

Wires the pipeline's steps to `DeploymentHandle` calls; the routes themselves
live in `graph.api`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve

from graph.api import ServingContext, api_keys, create_app, model_names
from graph.config import RagServingArgs
from graph.deployments import replica_id
from graph.errors import is_overload, overloaded
from graph.pipeline import RagPipeline, Steps
from graph.prompts import get_template
from models.generation import Chunk, GenerationRequest
from retrieval.types import Hit
from telemetry.tracing import inject, setup_tracing

READINESS_TIMEOUT_S = 5.0


async def _call(method: Any, *args: Any) -> Any:
    """One handle call carrying the trace context; Serve's overload refusals
    become a 503 envelope with Retry-After (Serve would answer plain text)."""
    try:
        return await method.remote(*args, inject())
    except Exception as exc:
        if is_overload(exc):
            raise overloaded(exc) from None
        raise


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
        # the step spans join the request's trace whatever Ray propagates.
        async def embed(texts: list[str]) -> np.ndarray:
            return await _call(embedder.embed, texts)

        async def embed_with_usage(texts: list[str]) -> tuple[np.ndarray, int]:
            return await _call(embedder.embed_with_usage, texts)

        async def retrieve(vectors: np.ndarray, k: int) -> list[list[Hit]]:
            return await _call(retriever.search, vectors, k)

        async def rerank(query: str, passages: list[str]) -> list[float]:
            return await _call(reranker.rerank, query, passages)

        async def generate(request: GenerationRequest) -> AsyncIterator[Chunk]:
            stream = generator.options(stream=True)
            response = stream.generate.remote(request, inject())
            finished = False
            try:
                try:
                    async for chunk in response:
                        yield chunk
                except Exception as exc:
                    if is_overload(exc):
                        raise overloaded(exc) from None
                    raise
                finished = True
            finally:
                if not finished:
                    # The client went away or the caller stopped reading:
                    # cancel so the replica aborts the request inside vLLM.
                    response.cancel()

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
                return f"error: {type(exc).__name__}"

        names = list(self._nodes)
        states = await asyncio.gather(*(one(self._nodes[n]) for n in names))
        return dict(zip(names, states, strict=True))
