"""`POST /v1/completions`: plain generation, no retrieval, streaming or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from graph.api import limits, streaming
from graph.api import protocol as p
from graph.api.context import Ctx, ServingContext
from graph.api.releases import fingerprint, mark_first_token, mirror, select
from graph.api.routes.common import check_model, sampling, trace_headers
from models.generation import Chunk, GenerationRequest

router = APIRouter()


@router.post("/v1/completions")
async def completions(
    body: p.CompletionRequest,
    request: Request,
    ctx: Ctx,
) -> Response:
    """Plain completion, no retrieval."""
    limits.check_completion(body, ctx.args.limits, ctx.names.max_model_len)
    release = select(ctx, request, body.user)
    model = check_model(body.model, release.names.generator)
    rid = p.new_id("cmpl")
    mirror(ctx, request, lambda c: _stream(c, body, request, f"{rid}-shadow"))
    stream = await _stream(release, body, request, rid)
    first = await streaming.first_chunk(stream)
    mark_first_token(request)
    fp = fingerprint(request)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return streaming.sse(
            streaming.completion_events(rid, model, first, stream, include_usage, fp)
        )
    text, final = await streaming.collect(first, stream)
    response = p.CompletionResponse(
        id=rid,
        created=p.now(),
        model=model,
        choices=[p.CompletionChoice(text=text, finish_reason=final.finish_reason)],
        usage=streaming.usage(final),
        system_fingerprint=fp,
    )
    return JSONResponse(p.dump(response))


async def _stream(
    ctx: ServingContext, body: p.CompletionRequest, request: Request, rid: str
) -> AsyncIterator[Chunk]:
    prompt = body.prompt_input()
    generation = GenerationRequest(
        request_id=rid,
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_token_ids=None if isinstance(prompt, str) else prompt,
        sampling=sampling(body, ctx, body.max_tokens),
        trace_headers=trace_headers(request),
    )
    return ctx.pipeline.steps.generate(generation)
