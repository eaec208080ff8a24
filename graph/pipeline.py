"""The RAG pipeline: one question in, citations and a token stream out.

Knows the order of the steps and how their results feed each other; knows
nothing of how a step runs (a Ray Serve handle call inside the graph, a direct
engine call in `ragserve ask`): the steps are injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from graph.prompts import PromptTemplate
from models.errors import PromptTooLongError
from models.generation import Chunk, GenerationRequest, SamplingOptions
from retrieval.chunking import titled
from retrieval.types import DENSE, Hit, SearchMode

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]
# (query vectors, k, query texts, first-stage mode) -> hits per query.
RetrieveFn = Callable[
    [np.ndarray, int, list[str], SearchMode], Awaitable[list[list[Hit]]]
]


class RerankFn(Protocol):
    """Scores passages for a query; `dense`, when given, holds the query's
    cosine with each passage (the retrieval scores), so a fusion reranker
    need not embed them again."""

    def __call__(
        self, query: str, passages: list[str], dense: list[float] | None = None
    ) -> Awaitable[list[float]]: ...


GenerateFn = Callable[[GenerationRequest], AsyncIterator[Chunk]]


@dataclass
class Steps:
    """The four steps as async callables."""

    embed: EmbedFn
    retrieve: RetrieveFn
    rerank: RerankFn
    generate: GenerateFn


@dataclass
class RetrievalOptions:
    enabled: bool = True
    top_k: int = 12
    top_n: int = 3
    rerank: bool = True


@dataclass
class RagAnswer:
    """The generator's stream and the chunks its prompt holds.

    `citations` is final once the stream's first chunk has arrived: chunks
    that would push the prompt past the context window are dropped, weakest
    first, before generation starts.
    """

    citations: list[Hit]
    stream: AsyncIterator[Chunk]


class RagPipeline:
    """embed -> retrieve -> rerank -> prompt -> generate.

    Args:
        steps: the injected step callables.
        template: the versioned prompt template.
        max_context_chars: retrieved text allowed in the prompt.
        search: the first stage's mode (dense, sparse or hybrid).
    """

    def __init__(
        self,
        steps: Steps,
        template: PromptTemplate,
        max_context_chars: int,
        search: SearchMode = DENSE,
    ):
        self.steps = steps
        self.template = template
        self.max_context_chars = max_context_chars
        self.search = search

    async def retrieve(self, query: str, options: RetrievalOptions) -> list[Hit]:
        """Steps 1-3: the best chunks for `query`, best first.

        1. embed the query;
        2. retrieve `top_k` chunks from the index (dense, sparse or hybrid);
        3. rerank them and keep `top_n` (or keep the index order when reranking
           is off).
        """
        vectors = await self.steps.embed([query])
        found = await self.steps.retrieve(vectors, options.top_k, [query], self.search)
        hits = found[0]
        if not options.rerank or not hits:
            return hits[: options.top_n]
        # The reranker reads each chunk as the index embedded it, title first
        # (the BM25 half of the fusion reranker otherwise never sees it).
        texts = [titled(hit.text, hit.title) for hit in hits]
        # A fusion reranker reuses the cosines; where one is unknown (a BM25
        # hit on a GPU index) it embeds the passages itself.
        known = [hit.cosine for hit in hits]
        cosines = None if None in known else [float(c) for c in known if c is not None]
        scores = await self.steps.rerank(query, texts, cosines)
        return rerank_hits(hits, scores, options.top_n)

    async def answer(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingOptions,
        request_id: str,
        options: RetrievalOptions,
        trace_headers: dict[str, str] | None = None,
    ) -> RagAnswer:
        """Answer the last user message of a conversation.

        1-3. retrieve context for the last user message (unless disabled);
        4. render the prompt from the versioned template;
        5. stream from the generator (with fewer chunks if they overflow).
        """
        query = last_user_message(messages)
        hits = await self.retrieve(query, options) if options.enabled else []
        stream = self._generate_within_context(
            messages, hits, sampling, request_id, trace_headers
        )
        return RagAnswer(hits, stream)

    async def _generate_within_context(
        self,
        messages: list[dict[str, str]],
        hits: list[Hit],
        sampling: SamplingOptions,
        request_id: str,
        trace_headers: dict[str, str] | None,
    ) -> AsyncIterator[Chunk]:
        """Steps 4-5. Retrieved context is ours to trim; the conversation is
        not. When the prompt does not fit, the engine's one count says by how
        many tokens (it refuses before generating); the weakest chunks that
        free that many are dropped at once (`_chunks_to_keep`) and the prompt
        is rendered again, so a long conversation is not re-tokenized once per
        chunk. When no chunk is left to drop, or dropping all of them cannot
        free enough, the error reaches the client without another count."""
        while True:
            request = GenerationRequest(
                request_id=request_id,
                messages=self.template.render(messages, hits, self.max_context_chars),
                sampling=sampling,
                trace_headers=trace_headers,
            )
            stream = self.steps.generate(request)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                return
            except Exception as exc:
                too_long = _prompt_too_long(exc)
                if too_long is None or not hits:
                    raise
                keep = _chunks_to_keep(request.messages or [], hits, too_long)
                if keep is None:
                    raise
                del hits[keep:]  # the caller's citations list: keep them in step
                continue
            break
        try:
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            # Closing this stream early (client gone) must reach the engine.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def rerank_hits(hits: list[Hit], scores: list[float], top_n: int) -> list[Hit]:
    """Order hits by reranker score (stable for ties) and keep `top_n`."""
    if len(scores) != len(hits):
        raise RuntimeError(
            f"reranker returned {len(scores)} scores for {len(hits)} hits"
        )
    order = sorted(range(len(hits)), key=lambda i: -scores[i])[:top_n]
    return [
        Hit(
            hits[i].chunk_id,
            hits[i].doc_id,
            hits[i].text,
            float(scores[i]),
            hits[i].title,
        )
        for i in order
    ]


def _prompt_too_long(exc: BaseException) -> PromptTooLongError | None:
    # Through Ray the engine's error arrives wrapped, with the original as cause.
    for candidate in (exc, getattr(exc, "cause", None)):
        if isinstance(candidate, PromptTooLongError):
            return candidate
    return None


def _chunks_to_keep(
    rendered: list[dict[str, str]], hits: list[Hit], err: PromptTooLongError
) -> int | None:
    """How many of `hits` (best first) to keep so the prompt fits, from the
    one token count in `err`; None when even dropping all cannot fit.

    A token holds at least one byte of text, so a chunk frees at most its
    UTF-8 length in tokens: when all chunks together hold fewer bytes than the
    excess, only the conversation could be shortened. Otherwise each chunk's
    share is estimated at the prompt's own tokens per byte, dropping at least
    one; a short estimate costs one more round, never a wrong refusal.
    """
    excess = err.prompt_tokens + err.max_tokens - err.max_model_len
    # A chunk's place in the prompt: "[n] (doc_id) text" and a separator.
    sizes = [
        len(f"[{i}] ({h.doc_id}) {h.text}\n\n".encode()) for i, h in enumerate(hits, 1)
    ]
    if excess > sum(sizes):
        return None
    prompt_bytes = sum(len(m["content"].encode("utf-8")) for m in rendered) or 1
    per_byte = err.prompt_tokens / prompt_bytes
    keep, freed = len(hits), 0.0
    while keep > 0 and (freed < excess or keep == len(hits)):
        keep -= 1
        freed += sizes[keep] * per_byte
    return keep


def last_user_message(messages: list[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise ValueError("no user message")
