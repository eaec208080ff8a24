"""The OpenAI-compatible HTTP API as a FastAPI app over a `ServingContext`.

Routes are thin: validate, call the pipeline or a step, shape the response.
The same app runs inside the Ray Serve ingress and, in unit tests, over an
in-process context.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from graph import protocol as p
from graph.config import RagServingArgs
from graph.errors import (
    APIError,
    error_response,
    install_error_handlers,
    sse_error,
    to_api_error,
)
from graph.pipeline import RagPipeline, RetrievalOptions
from models.generation import Chunk, GenerationRequest, SamplingOptions
from models.resolve import EMBEDDER_HUB_ID
from retrieval.types import Hit
from telemetry.tracing import extract, trace_id_hex, tracer

logger = logging.getLogger("ragserve.api")


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
    embed_with_usage: Callable[[list[str]], Awaitable[tuple[np.ndarray, int]]]
    readiness: Callable[[], Awaitable[dict[str, str]]]
    api_keys: frozenset[str] = frozenset()


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
    extra = [k.strip() for k in os.environ.get("RAGSERVE_API_KEYS", "").split(",")]
    return frozenset(k for k in [*args.server.api_keys, *extra] if k)


def create_app(ctx: ServingContext) -> FastAPI:
    """Build the FastAPI app serving `ctx`."""
    app = FastAPI(title="ragserve", version="0.1.0")
    app.state.ctx = ctx
    install_error_handlers(app)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Any) -> Response:
        """Request id, the `rag.request` root span (continuing a client's
        `traceparent`), `x-trace-id`, and API-key authentication."""
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid
        span = tracer().start_span(
            "rag.request",
            context=extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.url.path,
                "request.id": rid,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            if _authorized(request, ctx.api_keys):
                try:
                    response: Response = await call_next(request)
                except Exception as exc:
                    # Answer here: Starlette re-raises from its catch-all
                    # handler, and servers then log it and drop the connection.
                    response = error_response(to_api_error(exc, rid), rid)
            else:
                response = error_response(
                    APIError(
                        401,
                        "Missing or invalid API key (Authorization: Bearer ...).",
                        code="invalid_api_key",
                    ),
                    rid,
                )
        except BaseException:
            span.end()
            raise
        finally:
            otel_context.detach(token)
        response.headers["x-request-id"] = rid
        trace_id = trace_id_hex(span)
        if trace_id:
            response.headers["x-trace-id"] = trace_id
        span.set_attribute("http.response.status_code", response.status_code)
        body = getattr(response, "body_iterator", None)
        if body is None:
            span.end()
        else:  # streaming: the request lasts until the last byte is sent
            response.body_iterator = _end_span_after(body, span)  # type: ignore[attr-defined]
        return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
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

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
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

    @app.post("/v1/chat/completions")
    async def chat_completions(
        body: p.ChatCompletionRequest, request: Request
    ) -> Response:
        """RAG chat completion over the last user message."""
        model = _check_model(body.model, ctx.names.generator)
        rid = p.new_id("chatcmpl")
        answer = await ctx.pipeline.answer(
            [
                {
                    "role": m.role if m.role != "developer" else "system",
                    "content": m.text(),
                }
                for m in body.messages
            ],
            _sampling(body, ctx, body.requested_max_tokens()),
            rid,
            _retrieval_options(body.rag, ctx.args),
            trace_headers=_trace_headers(request),
        )
        first = await _first_chunk(answer.stream)
        citations = [_citation(i, h) for i, h in enumerate(answer.citations, start=1)]
        if body.stream:
            include_usage = bool(
                body.stream_options and body.stream_options.include_usage
            )
            return _sse(
                _chat_events(rid, model, citations, first, answer.stream, include_usage)
            )
        text, final = await _collect(first, answer.stream)
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
            usage=_usage(final),
            citations=citations,
        )
        return JSONResponse(p.dump(response))

    @app.post("/v1/completions")
    async def completions(body: p.CompletionRequest, request: Request) -> Response:
        """Plain completion, no retrieval."""
        model = _check_model(body.model, ctx.names.generator)
        rid = p.new_id("cmpl")
        generation = GenerationRequest(
            request_id=rid,
            prompt=body.prompt_text(),
            sampling=_sampling(body, ctx, body.max_tokens),
            trace_headers=_trace_headers(request),
        )
        stream = ctx.pipeline.steps.generate(generation)
        first = await _first_chunk(stream)
        if body.stream:
            include_usage = bool(
                body.stream_options and body.stream_options.include_usage
            )
            return _sse(_completion_events(rid, model, first, stream, include_usage))
        text, final = await _collect(first, stream)
        response = p.CompletionResponse(
            id=rid,
            created=p.now(),
            model=model,
            choices=[p.CompletionChoice(text=text, finish_reason=final.finish_reason)],
            usage=_usage(final),
        )
        return JSONResponse(p.dump(response))

    @app.post("/v1/embeddings")
    async def embeddings(body: p.EmbeddingRequest) -> dict[str, Any]:
        """Embed texts with the graph's embedder."""
        model = _check_model(body.model, ctx.names.embedder)
        vectors, tokens = await ctx.embed_with_usage(body.texts())
        if body.dimensions is not None and body.dimensions != vectors.shape[1]:
            raise APIError(
                400,
                f"dimensions must be {vectors.shape[1]} for {model} "
                "(it cannot be shortened)",
                param="dimensions",
            )
        data = [
            p.EmbeddingData(index=i, embedding=_encode(vec, body.encoding_format))
            for i, vec in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return p.dump(p.EmbeddingResponse(data=data, model=model, usage=usage))

    @app.post("/v1/rerank")
    async def rerank(body: p.RerankRequest) -> dict[str, Any]:
        """Score documents against a query, best first."""
        model = _check_model(body.model, ctx.names.reranker)
        texts = body.texts()
        scores = await ctx.pipeline.steps.rerank(body.query, texts)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[
            : body.top_n or len(texts)
        ]
        results = [
            p.RerankResult(
                index=i,
                relevance_score=float(scores[i]),
                document=p.RerankDocument(text=texts[i])
                if body.return_documents
                else None,
            )
            for i in order
        ]
        return p.dump(
            p.RerankResponse(id=p.new_id("rerank"), model=model, results=results)
        )

    @app.post("/v1/retrieve")
    async def retrieve(body: p.RetrieveRequest) -> dict[str, Any]:
        """Chunks from the index for a query (optionally reranked)."""
        cfg = ctx.args.retrieval
        top_k = body.top_k or cfg.top_k
        top_n = body.top_n or (cfg.top_n if body.rerank else top_k)
        if top_n > top_k:
            raise APIError(
                400, f"top_n ({top_n}) must not exceed top_k ({top_k})", param="top_n"
            )
        hits = await ctx.pipeline.retrieve(
            body.query, RetrievalOptions(True, top_k, top_n, body.rerank)
        )
        return p.dump(
            p.RetrieveResponse(data=[_citation(i, h) for i, h in enumerate(hits, 1)])
        )

    return app


def _authorized(request: Request, keys: frozenset[str]) -> bool:
    if not keys or not request.url.path.startswith("/v1/"):
        return True
    auth = request.headers.get("authorization", "")
    return auth.startswith("Bearer ") and auth.removeprefix("Bearer ").strip() in keys


async def _end_span_after(body: AsyncIterator[Any], span: Any) -> AsyncIterator[Any]:
    try:
        async for part in body:
            yield part
    finally:
        span.end()


def _check_model(requested: str | None, served: str) -> str:
    if requested is None or requested == served:
        return served
    raise APIError(
        404,
        f"The model {requested!r} does not exist here; this endpoint serves {served!r} "
        "(see GET /v1/models).",
        param="model",
        code="model_not_found",
    )


def _sampling(
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
    )


def _retrieval_options(
    rag: p.RagOptions | None, args: RagServingArgs
) -> RetrievalOptions:
    cfg = args.retrieval
    rag = rag or p.RagOptions()
    top_k = rag.top_k or cfg.top_k
    top_n = rag.top_n or min(cfg.top_n, top_k)
    if top_n > top_k:
        raise APIError(
            400,
            f"rag.top_n ({top_n}) must not exceed rag.top_k ({top_k})",
            param="rag.top_n",
        )
    return RetrievalOptions(
        enabled=rag.enabled,
        top_k=top_k,
        top_n=top_n,
        rerank=cfg.rerank if rag.rerank is None else rag.rerank,
    )


def _trace_headers(request: Request) -> dict[str, str] | None:
    headers = {
        k: request.headers[k]
        for k in ("traceparent", "tracestate")
        if k in request.headers
    }
    return headers or None


def _citation(index: int, hit: Hit) -> p.Citation:
    return p.Citation(
        index=index,
        doc_id=hit.doc_id,
        chunk_id=hit.chunk_id,
        title=hit.title,
        text=hit.text,
        score=hit.score,
    )


def _usage(final: Chunk) -> p.Usage:
    return p.Usage(
        prompt_tokens=final.prompt_tokens,
        completion_tokens=final.completion_tokens,
        total_tokens=final.prompt_tokens + final.completion_tokens,
    )


def _encode(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vec]


async def _first_chunk(stream: AsyncIterator[Chunk]) -> Chunk:
    """Wait for the first chunk, so errors before generation starts
    (prompt too long, overload) become a plain HTTP error, not a broken stream."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        raise RuntimeError("generator ended without a final chunk") from None
    except BaseException:
        await _close(stream)
        raise


async def _close(stream: AsyncIterator[Chunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing must not mask the original error
            logger.debug("closing a stream failed", exc_info=True)


async def _collect(first: Chunk, stream: AsyncIterator[Chunk]) -> tuple[str, Chunk]:
    parts = [first.text]
    final = first
    try:
        async for chunk in stream:
            parts.append(chunk.text)
            final = chunk
    finally:
        await _close(stream)
    if final.finish_reason is None:
        raise RuntimeError("generator stream ended without a finish reason")
    return "".join(parts), final


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _event(body: p.ChatCompletionChunk | p.CompletionResponse) -> str:
    """An SSE event; top-level fields that are unset (usage, citations) are left
    out, while `finish_reason: null` stays as OpenAI sends it."""
    data = body.model_dump(mode="json")
    return _data({k: v for k, v in data.items() if v is not None})


async def _chunks(first: Chunk, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    yield first
    async for chunk in stream:
        yield chunk


async def _chat_events(
    rid: str,
    model: str,
    citations: list[p.Citation],
    first: Chunk,
    stream: AsyncIterator[Chunk],
    include_usage: bool,
) -> AsyncIterator[str]:
    created = p.now()

    def chunk(delta: p.DeltaMessage, finish: str | None = None, **extra: Any) -> str:
        body = p.ChatCompletionChunk(
            id=rid,
            created=created,
            model=model,
            choices=[p.ChatChunkChoice(delta=delta, finish_reason=finish)],
            **extra,
        )
        return _event(body)

    yield chunk(p.DeltaMessage(role="assistant", content=""), citations=citations)
    final: Chunk | None = None
    try:
        async for piece in _chunks(first, stream):
            if piece.text or piece.finish_reason:
                yield chunk(p.DeltaMessage(content=piece.text), piece.finish_reason)
            final = piece
        if include_usage and final is not None:
            usage = p.ChatCompletionChunk(
                id=rid, created=created, model=model, choices=[], usage=_usage(final)
            )
            yield _event(usage)
    except Exception as exc:  # a failure after the headers went out
        yield sse_error(to_api_error(exc, rid))
    finally:
        await _close(stream)
    yield "data: [DONE]\n\n"


async def _completion_events(
    rid: str,
    model: str,
    first: Chunk,
    stream: AsyncIterator[Chunk],
    include_usage: bool,
) -> AsyncIterator[str]:
    created = p.now()
    final: Chunk | None = None
    try:
        async for piece in _chunks(first, stream):
            if piece.text or piece.finish_reason:
                body = p.CompletionResponse(
                    id=rid,
                    created=created,
                    model=model,
                    choices=[
                        p.CompletionChoice(
                            text=piece.text, finish_reason=piece.finish_reason
                        )
                    ],
                )
                yield _event(body)
            final = piece
        if include_usage and final is not None:
            usage = p.CompletionResponse(
                id=rid, created=created, model=model, choices=[], usage=_usage(final)
            )
            yield _event(usage)
    except Exception as exc:
        yield sse_error(to_api_error(exc, rid))
    finally:
        await _close(stream)
    yield "data: [DONE]\n\n"
