"""What the HTTP routes are served from: model names, the pipeline, readiness.

Knows the names clients use for the models and which keys are accepted;
knows nothing of Ray (the ingress builds a context over handles, unit tests
over in-process engines).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from graph.api import protocol as p
from graph.config import RagServingArgs
from graph.gate.tenancy import TenantGate
from graph.pipeline import RagPipeline
from graph.routing.router import ReleaseRouter
from models.embedder import EmbedInput
from models.resolve import EMBEDDER_HUB_ID


@dataclass
class ModelNames:
    generator: str
    embedder: str
    reranker: str
    max_model_len: int
    created: int = field(default_factory=p.now)


@dataclass
class ServingContext:
    """What the routes need; built by the ingress (handles) or by tests (engines)."""

    args: RagServingArgs
    pipeline: RagPipeline
    names: ModelNames
    embed_with_usage: Callable[[list[EmbedInput]], Awaitable[tuple[np.ndarray, int]]]
    readiness: Callable[[], Awaitable[dict[str, str]]]
    api_keys: frozenset[str] = frozenset()
    #: The live releases and weights; None serves `pipeline` alone (tests).
    router: ReleaseRouter[ServingContext] | None = None
    #: Tenant keys, limits, audit; None: `api_keys` only.
    gate: TenantGate | None = None


def get_ctx(request: Request) -> ServingContext:
    """The context of the app serving `request` (a FastAPI dependency)."""
    ctx: ServingContext = request.app.state.ctx
    return ctx


def model_names(args: RagServingArgs) -> ModelNames:
    """Names clients use for the three models, derived from config alone."""
    models = args.models
    embedder = (
        EMBEDDER_HUB_ID if models.embedder.model == "default" else models.embedder.model
    )
    if models.reranker.kind == "cross-encoder" and models.reranker.model:
        reranker = models.reranker.model
    else:
        reranker = f"bm25+{embedder}"
    return ModelNames(
        generator=models.generator.served_name(),
        embedder=embedder,
        reranker=reranker,
        max_model_len=models.generator.max_model_len,
    )


def api_keys(args: RagServingArgs) -> frozenset[str]:
    """`server.api_keys` plus the comma-separated `RAGSERVE_API_KEYS`."""
    extra = [k.strip() for k in os.environ.get("RAGSERVE_API_KEYS", "").split(",")]
    return frozenset(k for k in [*args.server.api_keys, *extra] if k)


#: The serving context as a route parameter: `ctx: Ctx`.
Ctx = Annotated[ServingContext, Depends(get_ctx)]
