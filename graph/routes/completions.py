"""`POST /v1/completions`: plain generation, no retrieval, streaming or not."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from graph import protocol as p
from graph import streaming
from graph.context import Ctx
from graph.routes.common import check_model, sampling, trace_headers
from models.generation import GenerationRequest

router = APIRouter()


@router.post("/v1/completions")
async def completions(
    body: p.CompletionRequest,
    request: Request,
    ctx: Ctx,
) -> Response:
    """Plain completion, no retrieval."""
    model = check_model(body.model, ctx.names.generator)
    rid = p.new_id("cmpl")
    generation = GenerationRequest(
        request_id=rid,
        prompt=body.prompt_text(),
        sampling=sampling(body, ctx, body.max_tokens),
        trace_headers=trace_headers(request),
    )
    stream = ctx.pipeline.steps.generate(generation)
    first = await streaming.first_chunk(stream)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return streaming.sse(
            streaming.completion_events(rid, model, first, stream, include_usage)
        )
    text, final = await streaming.collect(first, stream)
    response = p.CompletionResponse(
        id=rid,
        created=p.now(),
        model=model,
        choices=[p.CompletionChoice(text=text, finish_reason=final.finish_reason)],
        usage=streaming.usage(final),
    )
    return JSONResponse(p.dump(response))
