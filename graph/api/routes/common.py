"""Request pieces shared by the routes: model check, sampling, retrieval options.

Knows how wire fields map onto the pipeline's options and config defaults.
"""

from __future__ import annotations

from fastapi import Request

from graph.api import protocol as p
from graph.api.context import ServingContext
from graph.config import RagServingArgs
from graph.errors import APIError
from graph.pipeline import RetrievalOptions
from models.generation import SamplingOptions
from retrieval.types import Hit


def check_model(requested: str | None, served: str) -> str:
    """The served model's name, or 404 for any other."""
    if requested is None or requested == served:
        return served
    raise APIError(
        404,
        f"The model {requested!r} does not exist here; this endpoint serves {served!r} "
        "(see GET /v1/models).",
        param="model",
        code="model_not_found",
    )


def sampling(
    body: p._Sampling, ctx: ServingContext, max_tokens: int | None
) -> SamplingOptions:
    gen = ctx.args.models.generator
    return SamplingOptions(
        max_tokens=max_tokens or gen.default_max_tokens,
        temperature=gen.temperature if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop_list(),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        repetition_penalty=body.repetition_penalty or gen.repetition_penalty,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
    )


def retrieval_options(
    rag: p.RagOptions | None, args: RagServingArgs
) -> RetrievalOptions:
    cfg = args.retrieval
    rag = rag or p.RagOptions()
    top_k = rag.top_k or cfg.top_k
    # rag.top_n above rag.top_k keeps all top_k (see routes/retrieval.py).
    top_n = min(rag.top_n or cfg.top_n, top_k)
    return RetrievalOptions(
        enabled=rag.enabled,
        top_k=top_k,
        top_n=top_n,
        rerank=cfg.rerank if rag.rerank is None else rag.rerank,
    )


def trace_headers(request: Request) -> dict[str, str] | None:
    """The client's W3C trace headers, handed on to vLLM."""
    headers = {
        k: request.headers[k]
        for k in ("traceparent", "tracestate")
        if k in request.headers
    }
    return headers or None


def citation(index: int, hit: Hit) -> p.Citation:
    return p.Citation(
        index=index,
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        title=hit.title,
        text=hit.text,
        score=hit.score,
    )
