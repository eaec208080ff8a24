"""`POST /v1/embeddings`: the graph's embedder, as float lists or base64."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from graph.api import limits
from graph.api import protocol as p
from graph.api.context import Ctx
from graph.api.releases import select
from graph.api.routes.common import check_model
from graph.errors import APIError

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(
    body: p.EmbeddingRequest, request: Request, ctx: Ctx
) -> dict[str, Any]:
    """Embed texts (or token ids) with the graph's embedder."""
    limits.check_embeddings(body, ctx.args.limits)
    ctx = select(ctx, request, body.user)
    model = check_model(body.model, ctx.names.embedder)
    vectors, tokens = await ctx.embed_with_usage(body.inputs())
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise APIError(
            400,
            f"dimensions must be {vectors.shape[1]} for {model} "
            "(it cannot be shortened)",
            param="dimensions",
        )
    data = [
        p.EmbeddingData(index=i, embedding=encode(vec, body.encoding_format))
        for i, vec in enumerate(vectors)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return p.dump(p.EmbeddingResponse(data=data, model=model, usage=usage))


def encode(vec: np.ndarray, fmt: str) -> list[float] | str:
    """One vector as OpenAI sends it: a float list, or little-endian f32 base64."""
    if fmt == "base64":
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vec]
