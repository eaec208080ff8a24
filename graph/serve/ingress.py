"""The ingress deployment: the OpenAI API in front of the step deployments.

Builds one serving context per live release over that release's handles,
routes each request to a release (`graph.routing.router`), warms each
release up before it takes weight, and takes the live weights from its Serve
user_config; the routes live in `graph.api.routes`, the hops in `graph.serve.handles`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve

from graph.api.app import create_app
from graph.api.context import ServingContext, api_keys, model_names
from graph.config import RagServingArgs
from graph.errors import replica_lost
from graph.gate.ledger_actor import ActorLedger
from graph.gate.tenancy import TenantGate
from graph.layout import NODES, Placement
from graph.pipeline import RagPipeline, RetrievalOptions, Steps
from graph.prompts import get_template
from graph.resilience import name_missing
from graph.routing.router import LiveRelease, ReleaseRouter
from graph.serve.deployments import replica_id
from graph.serve.groups import LocalHandle, StepSpec, build_steps
from graph.serve.handles import call_step, stream_generate
from graph.serve.heap import start_heap_trimmer
from graph.serve.serve_config import apply_ingress_user_config, scale_entry
from models.embedder import EmbedInput
from models.generation import Chunk, GenerationRequest, SamplingOptions
from releases.config import FaultInjection
from releases.traffic import TrafficState
from retrieval.types import Hit, SearchMode
from telemetry.tracing import CURRENT_RELEASE, setup_tracing

logger = logging.getLogger("ragserve.ingress")
READINESS_TIMEOUT_S = 5.0


@serve.deployment
@serve.ingress()
class IngressDeployment:
    """FastAPI ingress speaking the OpenAI protocol, routing to releases."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        routes: dict[str, dict[str, Any]],
        args: RagServingArgs,
        releases: list[dict[str, Any]],
    ) -> None:
        setup_tracing(args.telemetry, "ingress", replica_id())
        start_heap_trimmer()
        self.args = args
        self.layout = Placement.of(args.layout)
        # Tenants: keys, limits shared through one ledger actor, fair share
        # in front of the generator, audit of every request (graph.gate.tenancy).
        self.gate = TenantGate(args, ActorLedger(args), api_keys(args), replica_id())
        # This replica's own steps (its step group), one per artifact, shared
        # by the releases that use it; called in-process like handles.
        routes = await with_local_steps(routes)
        self._nodes = {
            h.deployment_name: h for nodes in routes.values() for h in nodes.values()
        }
        live = [
            LiveRelease(
                name=r["name"],
                id=r["id"],
                ctx=release_context(
                    routes[r["name"]],
                    RagServingArgs.load(r["args"]),
                    r["fault"],
                    self.gate,
                ),
                fault=FaultInjection.model_validate(r["fault"]),
                deployments=frozenset(
                    h.deployment_name
                    for h in routes[r["name"]].values()
                    if not isinstance(h, LocalHandle)
                ),
            )
            for r in releases
        ]
        # Each step deployment's configured scale (its group's first member):
        # where it goes back to when a retired release is restored
        # (graph.serve.serve_config.plan_update).
        self._scales = {
            handle.deployment_name: scale_entry(
                getattr(
                    RagServingArgs.load(r["args"]).deployments, self.layout.lead(node)
                )
            )
            for r in releases
            for node, handle in routes[r["name"]].items()
            if not isinstance(handle, LocalHandle)
        }
        self.router = ReleaseRouter(
            live,
            TrafficState.initial([r.name for r in live]),
            args.releases.canary,
            apply=self._apply,
            on_change=self._audit,
            grace_s=args.releases.grace_period_s,
        )
        first = live[0].ctx
        self.ctx = ServingContext(
            args=args,
            pipeline=first.pipeline,
            names=first.names,
            embed_with_usage=first.embed_with_usage,
            readiness=self.readiness,
            api_keys=api_keys(args),
            router=self.router,
            gate=self.gate,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def __del__(self) -> None:
        # Serve calls this on a graceful replica shutdown: write out what the
        # audit log and completion records still hold in their queues.
        gate = getattr(self, "gate", None)
        if gate is not None:
            gate.close()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.ctx)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's user_config: the live traffic state (weights, shadow, ...)."""
        restored = self.router.reconfigure(config)
        queries = self.args.releases.warmup_queries
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(warm_up(r, queries))
                for r in self.router.releases.values()
                if r.state != "retired"
            ]
            self._tasks.append(asyncio.create_task(self.router.judge_forever()))
        else:  # back from retirement: its deployments scale up, it warms again
            self._tasks += [asyncio.create_task(warm_up(r, queries)) for r in restored]

    async def _apply(self, state: TrafficState) -> None:
        app = serve.get_replica_context().app_name
        try:
            await apply_ingress_user_config(
                app,
                state.model_dump(mode="json"),
                self.router.parked(state),
                self._scales,
            )
        except RuntimeError as exc:
            from graph.errors import APIError

            raise APIError(409, str(exc), code="not_declarative") from None

    def _audit(
        self, action: str, actor: str, before: dict[str, Any], after: dict[str, Any]
    ) -> None:
        # Written off the request path by the audit log's own thread.
        self.gate.audit.admin(actor, action, before, after)

    async def readiness(self) -> dict[str, str]:
        # A parked deployment has no replica by design; asking it would
        # scale it up again.
        parked = self.router.parked(self.router.state)
        live = {n: h for n, h in self._nodes.items() if n not in parked}
        return {**await nodes_readiness(live), **dict.fromkeys(parked, "parked")}


async def with_local_steps(
    routes: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """`routes` with each step spec (a step of the ingress's own group) built
    in this process, once per deployment name, an embedder before its users."""
    specs = {
        s.name: s
        for nodes in routes.values()
        for s in nodes.values()
        if isinstance(s, StepSpec)
    }
    built = await build_steps(sorted(specs.values(), key=lambda s: NODES.index(s.node)))
    return {
        release: {
            node: built[h.name] if isinstance(h, StepSpec) else h
            for node, h in nodes.items()
        }
        for release, nodes in routes.items()
    }


async def nodes_readiness(nodes: dict[str, Any]) -> dict[str, str]:
    """Each node's own readiness, by deployment name."""

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

    names = list(nodes)
    states = await asyncio.gather(*(one(nodes[n]) for n in names))
    return await name_missing(dict(zip(names, states, strict=True)))


def release_context(
    handles: dict[str, Any],
    args: RagServingArgs,
    fault: dict[str, Any],
    gate: TenantGate | None = None,
) -> ServingContext:
    """One release's pipeline over its nodes' handles. Each hop carries the
    W3C context (and the send time) explicitly, so the step spans join the
    request's trace whatever Ray propagates; each waits within the request's
    deadline (graph.resilience)."""
    policy = args.resilience
    embedder, retriever = handles["embedder"], handles["retriever"]
    reranker, generator = handles["reranker"], handles["generator"]
    injected = FaultInjection.model_validate(fault)

    async def embed(texts: list[str]) -> np.ndarray:
        return await call_step(embedder.embed, texts, config=policy)

    async def embed_with_usage(texts: list[EmbedInput]) -> tuple[np.ndarray, int]:
        return await call_step(embedder.embed_with_usage, texts, config=policy)

    async def retrieve(
        vectors: np.ndarray, k: int, queries: list[str], mode: SearchMode
    ) -> list[list[Hit]]:
        return await call_step(
            retriever.search, vectors, k, queries, mode, config=policy
        )

    async def rerank(
        query: str, passages: list[str], dense: list[float] | None = None
    ) -> list[float]:
        return await call_step(reranker.rerank, query, passages, dense, config=policy)

    def generate(request: GenerationRequest) -> AsyncIterator[Chunk]:
        if injected.delay_ms or injected.error_rate:
            return with_fault(request)
        return stream_generate(generator, request, policy)

    async def with_fault(request: GenerationRequest) -> AsyncIterator[Chunk]:
        # A deliberately worse release (rehearsing the canary judge).
        if injected.delay_ms:
            await asyncio.sleep(injected.delay_ms / 1000)
        if injected.error_rate and random.random() < injected.error_rate:
            raise RuntimeError("injected fault (releases.fault.error_rate)")
        stream = stream_generate(generator, request, policy)
        async with aclosing(stream):  # type: ignore[type-var]  # an async gen
            async for chunk in stream:
                yield chunk

    if gate is not None:  # fair-share slot, tokens charged as they stream
        generate = gate.meter(generate)  # type: ignore[assignment]
        embed_with_usage = gate.meter_embed(embed_with_usage)  # type: ignore[assignment]
    pipeline = RagPipeline(
        Steps(embed=embed, retrieve=retrieve, rerank=rerank, generate=generate),
        get_template(args.retrieval.prompt_template),
        args.retrieval.max_context_chars,
        SearchMode(args.retrieval.mode, args.retrieval.rrf_k),
    )

    async def readiness() -> dict[str, str]:
        return await nodes_readiness({h.deployment_name: h for h in handles.values()})

    return ServingContext(
        args=args,
        pipeline=pipeline,
        names=model_names(args),
        embed_with_usage=embed_with_usage,
        readiness=readiness,
        api_keys=api_keys(args),
    )


async def warm_up(release: LiveRelease, queries: list[str]) -> None:
    """The release takes weight only after this: its nodes report ready, then
    each warm-up question goes through its whole path (embed, FAISS, rerank,
    the generator with the release's template, so the prefix cache is warm)."""
    cfg = release.ctx.args.retrieval
    options = RetrievalOptions(True, cfg.top_k, cfg.top_n, cfg.rerank)
    sampling = SamplingOptions(max_tokens=1, temperature=0.0)
    CURRENT_RELEASE.set(release.name)
    while True:
        try:
            nodes = await release.ctx.readiness()
            waiting = [n for n, s in nodes.items() if s != "ready"]
            if waiting:
                release.state = "warming"
                await asyncio.sleep(1)
                continue
            for query in queries:
                answer = await release.ctx.pipeline.answer(
                    [{"role": "user", "content": query}],
                    sampling,
                    f"warmup-{uuid.uuid4().hex}",
                    options,
                )
                async for _ in answer.stream:
                    pass
            release.state = "warm"
            logger.info("release %s is warm", release.name)
            return
        except Exception as exc:
            release.state = f"warm-up failed: {type(exc).__name__}"
            logger.warning("warm-up of %s failed: %s; retrying", release.name, exc)
            await asyncio.sleep(2)
