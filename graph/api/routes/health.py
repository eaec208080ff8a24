"""Probes and the model list: `/health`, `/ready`, `/v1/models`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from graph.api import protocol as p
from graph.api.context import Ctx
from graph.layout import Placement

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the ingress answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(ctx: Ctx) -> JSONResponse:
    """Readiness: every node has warmed up, and so has every release with weight."""
    nodes = await ctx.readiness()
    waiting = [
        f"{n} ({s})" for n, s in sorted(nodes.items()) if s not in ("ready", "parked")
    ]
    # Which steps share a deployment: [["ingress", "embedder", ...], ...].
    layout = Placement.of(ctx.args.layout).describe()
    extra: dict[str, Any] = {"nodes": nodes, "layout": layout}
    if ctx.router is not None:
        releases = ctx.router.describe()["releases"]
        extra["releases"] = releases
        waiting += [
            f"release {r['name']} ({r['state']})"
            for r in releases
            if r["weight"] > 0 and r["state"] != "warm"
        ]
    if waiting:
        body = {
            "error": {
                "message": "not ready: " + ", ".join(waiting),
                "type": "service_unavailable_error",
                "param": None,
                "code": "not_ready",
            },
            **extra,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", **extra})


@router.get("/v1/models")
async def models(ctx: Ctx) -> dict[str, Any]:
    """List the served models and the live releases with their weights."""
    contexts = [r.ctx for r in ctx.router.releases.values()] if ctx.router else [ctx]
    cards: dict[str, p.ModelCard] = {}
    for c in contexts:
        n = c.names
        for card in (
            p.ModelCard(
                id=n.generator,
                created=n.created,
                task="generate",
                max_model_len=n.max_model_len,
            ),
            p.ModelCard(id=n.embedder, created=n.created, task="embed"),
            p.ModelCard(id=n.reranker, created=n.created, task="rerank"),
        ):
            cards.setdefault(card.id, card)
    out = p.dump(p.ModelList(data=list(cards.values())))
    if ctx.router is not None:
        out["releases"] = ctx.router.describe()["releases"]
    return out
