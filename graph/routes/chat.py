"""`POST /v1/chat/completions`: RAG over the last user message, streaming or not."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from graph import protocol as p
from graph import streaming
from graph.context import Ctx
from graph.routes.common import (
    check_model,
    citation,
    retrieval_options,
    sampling,
    trace_headers,
)

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(
    body: p.ChatCompletionRequest,
    request: Request,
    ctx: Ctx,
) -> Response:
    """RAG chat completion over the last user message."""
    model = check_model(body.model, ctx.names.generator)
    rid = p.new_id("chatcmpl")
    answer = await ctx.pipeline.answer(
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
    first = await streaming.first_chunk(answer.stream)
    citations = [citation(i, h) for i, h in enumerate(answer.citations, start=1)]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return streaming.sse(
            streaming.chat_events(
                rid, model, citations, first, answer.stream, include_usage
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
    )
    return JSONResponse(p.dump(response))
