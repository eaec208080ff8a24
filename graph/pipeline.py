"""The RAG pipeline: one question in, citations and a token stream out.

Knows the order of the steps and how their results feed each other; knows
nothing of how a step runs (a Ray Serve handle call inside the graph, a direct
engine call in `ragserve ask`): the steps are injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from graph.prompts import PromptTemplate
from models.generation import Chunk, GenerationRequest, SamplingOptions
from retrieval.types import Hit

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]
RetrieveFn = Callable[[np.ndarray, int], Awaitable[list[list[Hit]]]]
RerankFn = Callable[[str, list[str]], Awaitable[list[float]]]
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
    """Citations known up front, and the generator's stream."""

    citations: list[Hit]
    stream: AsyncIterator[Chunk]
    prompt_messages: list[dict[str, str]] = field(default_factory=list)


class RagPipeline:
    """embed -> retrieve -> rerank -> prompt -> generate.

    Args:
        steps: the injected step callables.
        template: the versioned prompt template.
        max_context_chars: retrieved text allowed in the prompt.
    """

    def __init__(self, steps: Steps, template: PromptTemplate, max_context_chars: int):
        self.steps = steps
        self.template = template
        self.max_context_chars = max_context_chars

    async def retrieve(self, query: str, options: RetrievalOptions) -> list[Hit]:
        """Steps 1-3: the best chunks for `query`, best first.

        1. embed the query;
        2. retrieve `top_k` chunks from the index;
        3. rerank them and keep `top_n` (or keep the index order when reranking
           is off).
        """
        vectors = await self.steps.embed([query])
        hits = (await self.steps.retrieve(vectors, options.top_k))[0]
        if not options.rerank or not hits:
            return hits[: options.top_n]
        scores = await self.steps.rerank(query, [hit.text for hit in hits])
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
        5. start streaming from the generator.
        """
        query = last_user_message(messages)
        hits = await self.retrieve(query, options) if options.enabled else []
        prompt = self.template.render(messages, hits, self.max_context_chars)
        request = GenerationRequest(
            request_id=request_id,
            messages=prompt,
            sampling=sampling,
            trace_headers=trace_headers,
        )
        return RagAnswer(hits, self.steps.generate(request), prompt)


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


def last_user_message(messages: list[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise ValueError("no user message")
