"""Probes and the model list: `/health`, `/ready`, `/v1/models`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from graph import protocol as p
from graph.context import Ctx

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the ingress answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(ctx: Ctx) -> JSONResponse:
    """Readiness: every node has warmed up."""
    nodes = await ctx.readiness()
    waiting = sorted(name for name, state in nodes.items() if state != "ready")
    if waiting:
        body = {
            "error": {
                "message": "not ready: "
                + ", ".join(f"{n} ({nodes[n]})" for n in waiting),
                "type": "service_unavailable_error",
                "param": None,
                "code": "not_ready",
            },
            "nodes": nodes,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "nodes": nodes})


@router.get("/v1/models")
async def models(ctx: Ctx) -> dict[str, Any]:
    """List the served models."""
    n = ctx.names
    cards = [
        p.ModelCard(
            id=n.generator,
            created=n.created,
            task="generate",
            max_model_len=n.max_model_len,
        ),
        p.ModelCard(id=n.embedder, created=n.created, task="embed"),
        p.ModelCard(id=n.reranker, created=n.created, task="rerank"),
    ]
    return p.dump(p.ModelList(data=cards))
