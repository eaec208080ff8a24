"""`POST /v1/rerank` and `POST /v1/retrieve`: the graph's retrieval steps alone."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from graph.api import limits
from graph.api import protocol as p
from graph.api.context import Ctx
from graph.api.releases import select
from graph.api.routes.common import check_model, citation
from graph.pipeline import RetrievalOptions

router = APIRouter()


@router.post("/v1/rerank")
async def rerank(body: p.RerankRequest, request: Request, ctx: Ctx) -> dict[str, Any]:
    """Score documents against a query, best first."""
    limits.check_rerank(body, ctx.args.limits)
    ctx = select(ctx, request)
    model = check_model(body.model, ctx.names.reranker)
    texts = body.texts()
    scores = await ctx.pipeline.steps.rerank(body.query, texts)
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[
        : body.top_n or len(texts)
    ]
    results = [
        p.RerankResult(
            index=i,
            relevance_score=float(scores[i]),
            document=p.RerankDocument(text=texts[i]) if body.return_documents else None,
        )
        for i in order
    ]
    return p.dump(p.RerankResponse(id=p.new_id("rerank"), model=model, results=results))


@router.post("/v1/retrieve")
async def retrieve(
    body: p.RetrieveRequest, request: Request, ctx: Ctx
) -> dict[str, Any]:
    """Chunks from the index for a query (optionally reranked)."""
    limits.check_retrieve(body, ctx.args.limits)
    ctx = select(ctx, request)
    cfg = ctx.args.retrieval
    top_k = body.top_k or cfg.top_k
    # A top_n above top_k keeps all top_k (as rerank's top_n above the
    # document count does): a schema cannot say "top_n <= top_k".
    top_n = min(body.top_n or (cfg.top_n if body.rerank else top_k), top_k)
    hits = await ctx.pipeline.retrieve(
        body.query, RetrievalOptions(True, top_k, top_n, body.rerank)
    )
    return p.dump(
        p.RetrieveResponse(data=[citation(i, h) for i, h in enumerate(hits, 1)])
    )
