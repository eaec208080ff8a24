"""Calls from the ingress to the step deployments over `DeploymentHandle`s.

Knows how one hop is made: the trace carrier in every call, Serve's overload
refusals turned into the 503 envelope, the request's deadline on every wait,
an idempotent step sent once more when its replica died, and a stream
cancelled when its reader stops; knows nothing of what the steps compute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from graph.resilience import StepCaller, guard_stream
from graph.resilience_config import ResilienceConfig
from models.generation import Chunk, GenerationRequest
from telemetry.tracing import inject

_DEFAULTS = ResilienceConfig()


async def call_step(
    method: Any, *args: Any, config: ResilienceConfig | None = None
) -> Any:
    """One call of an idempotent step (embed, retrieve, rerank) carrying the
    trace context, within the request's deadline. A call whose replica died
    is retried (`config.step_retries`, bounded by `step_retry_timeout_s`) on
    a live or replacement replica; past that bound a 503 with Retry-After.
    Serve's overload refusals become a 503 envelope with Retry-After (Serve
    would answer plain text)."""
    step = str(getattr(method, "deployment_name", "step"))
    return await StepCaller(config or _DEFAULTS, inject)(step, method, *args)


async def stream_generate(
    generator: Any, request: GenerationRequest, config: ResilienceConfig | None = None
) -> AsyncIterator[Chunk]:
    """The generator's chunks for `request`, streamed over the handle (the
    replica sends them in lists, one per short window).

    Never retried. A lost replica or a generation that does not start within
    `generate_start_timeout_s` is a 503 with Retry-After, the deadline passing
    a 504; a caller that stops reading cancels the request, so the replica
    aborts it inside vLLM.
    """
    response = generator.options(stream=True).generate.remote(request, inject())
    async with aclosing(guard_stream(response, config or _DEFAULTS)) as batches:
        async for batch in batches:
            for chunk in batch:
                yield chunk
