"""The generator deployment: one vLLM engine streaming completions to the ingress.

Knows how a generation crosses the hop (chunks coalesced per short window, the
first at once), what it records (TTFT, inter-token gaps, KV-cache use, the
engine's queue wait, GPU memory where the model lives) and how the replica's
health follows the engine's; continuous batching is vLLM's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry.trace import Span
from ray import serve

from batching.stream import coalesce
from graph.engines import make_generator
from graph.serve.deployments import Carrier, replica_id
from graph.serve.heap import start_heap_trimmer
from models.config import GeneratorConfig
from models.generation import Chunk, GenerationEngine, GenerationRequest
from telemetry.config import TelemetryConfig
from telemetry.gpu import child_pids, gpu_memory_attributes
from telemetry.metrics import metrics
from telemetry.tracing import (
    handle_wait_ms,
    record_interval,
    release_of,
    setup_tracing,
    start_step_span,
    trace_headers,
    tracing_enabled,
)


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
        start_heap_trimmer()
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
