"""Calls from the ingress to the step deployments over `DeploymentHandle`s.

Knows how one hop is made: the trace carrier in every call, Serve's overload
refusals turned into the 503 envelope, and a stream cancelled when its reader
stops; knows nothing of what the steps compute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from graph.errors import is_overload, overloaded
from models.generation import Chunk, GenerationRequest
from telemetry.tracing import inject


async def call_step(method: Any, *args: Any) -> Any:
    """One handle call carrying the trace context; Serve's overload refusals
    become a 503 envelope with Retry-After (Serve would answer plain text)."""
    try:
        return await method.remote(*args, inject())
    except Exception as exc:
        if is_overload(exc):
            raise overloaded(exc) from None
        raise


async def stream_generate(
    generator: Any, request: GenerationRequest
) -> AsyncIterator[Chunk]:
    """The generator's chunks for `request`, streamed over the handle (the
    replica sends them in lists, one per short window)."""
    response = generator.options(stream=True).generate.remote(request, inject())
    finished = False
    try:
        try:
            async for batch in response:
                for chunk in batch:
                    yield chunk
        except Exception as exc:
            if is_overload(exc):
                raise overloaded(exc) from None
            raise
        finished = True
    finally:
        if not finished:
            # The client went away or the caller stopped reading: cancel so
            # the replica aborts the request inside vLLM.
            response.cancel()
