"""`POST /v1/chat/completions`: RAG over the last user message, streaming or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from graph.api import limits, streaming
from graph.api import protocol as p
from graph.api.context import Ctx, ServingContext
from graph.api.releases import fingerprint, mark_first_token, mirror, select
from graph.api.routes.common import (
    check_model,
    citation,
    retrieval_options,
    sampling,
    trace_headers,
)
from graph.pipeline import RagAnswer
from models.generation import Chunk

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(
    body: p.ChatCompletionRequest,
    request: Request,
    ctx: Ctx,
) -> Response:
    """RAG chat completion over the last user message."""
    limits.check_chat(body, ctx.args.limits, ctx.names.max_model_len)
    release = select(ctx, request, body.user)
    model = check_model(body.model, release.names.generator)
    rid = p.new_id("chatcmpl")
    mirror(ctx, request, lambda c: _stream(c, body, request, f"{rid}-shadow"))
    answer = await _answer(release, body, request, rid)
    first = await streaming.first_chunk(answer.stream)
    mark_first_token(request)
    citations = [citation(i, h) for i, h in enumerate(answer.citations, start=1)]
    fp = fingerprint(request)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return streaming.sse(
            streaming.chat_events(
                rid, model, citations, first, answer.stream, include_usage, fp
            )
        )
    text, final = await streaming.collect(first, answer.stream)
    response = p.ChatCompletionResponse(
        id=rid,
        created=p.now(),
        model=model,
        choices=[
            p.ChatChoice(
                message=p.ResponseMessage(content=text),
                finish_reason=final.finish_reason,
            )
        ],
        usage=streaming.usage(final),
        citations=citations,
        system_fingerprint=fp,
    )
    return JSONResponse(p.dump(response))


async def _answer(
    ctx: ServingContext, body: p.ChatCompletionRequest, request: Request, rid: str
) -> RagAnswer:
    return await ctx.pipeline.answer(
        [
            {
                "role": m.role if m.role != "developer" else "system",
                "content": m.text(),
            }
            for m in body.messages
        ],
        sampling(body, ctx, body.requested_max_tokens()),
        rid,
        retrieval_options(body.rag, ctx.args),
        trace_headers=trace_headers(request),
    )


async def _stream(
    ctx: ServingContext, body: p.ChatCompletionRequest, request: Request, rid: str
) -> AsyncIterator[Chunk]:
    return (await _answer(ctx, body, request, rid)).stream
