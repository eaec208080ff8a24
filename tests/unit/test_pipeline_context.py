"""The context-overflow path counts the prompt's tokens once, not once per chunk.

The engine stand-in counts a token per UTF-8 byte (the most a tokenizer can
make of a text) and records every count it makes, so the number of times a
conversation is tokenized is observable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from graph.pipeline import RagPipeline, RetrievalOptions, Steps
from graph.prompts import get_template
from models.errors import PromptTooLongError
from models.generation import Chunk, GenerationRequest, SamplingOptions
from retrieval.types import Hit


class ByteEngine:
    """Refuses prompts over `window` tokens (one token per byte)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.counted: list[int] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        tokens = sum(len(m["content"].encode()) for m in request.messages or [])
        self.counted.append(tokens)
        if tokens + request.sampling.max_tokens > self.window:
            raise PromptTooLongError(tokens, request.sampling.max_tokens, self.window)
        yield Chunk(text="ok", finish_reason="stop", prompt_tokens=tokens)


def pipeline(engine: ByteEngine, hits: list[Hit]) -> RagPipeline:
    async def embed(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32)

    async def retrieve(vectors: np.ndarray, k: int, *_: object) -> list[list[Hit]]:
        return [list(hits[:k])]

    async def rerank(query: str, passages: list[str]) -> list[float]:
        return [float(len(passages) - i) for i in range(len(passages))]

    steps = Steps(embed, retrieve, rerank, engine.generate)
    return RagPipeline(steps, get_template("rag-v1"), 100_000)


HITS = [
    Hit(i, f"doc{i}.md", f"chunk {i} " + "x" * 200, 1.0 - i / 100) for i in range(50)
]


async def answer(p: RagPipeline, question: str) -> tuple[list[Hit], list[Chunk]]:
    result = await p.answer(
        [{"role": "user", "content": question}],
        SamplingOptions(max_tokens=16),
        "req-1",
        RetrievalOptions(top_k=50, top_n=50, rerank=False),
    )
    return result.citations, [c async for c in result.stream]


async def test_a_conversation_too_long_alone_is_counted_once() -> None:
    engine = ByteEngine(window=4000)

    with pytest.raises(PromptTooLongError):
        await answer(pipeline(engine, HITS), "why? " * 10_000)

    # 50 chunks could be dropped one by one; the one count already shows that
    # even without them the conversation cannot fit.
    assert len(engine.counted) == 1


async def test_overflowing_context_is_trimmed_in_one_more_round() -> None:
    engine = ByteEngine(window=4000)

    citations, chunks = await answer(
        pipeline(engine, HITS), "how are requests batched?"
    )

    assert chunks[-1].finish_reason == "stop"
    assert len(engine.counted) == 2
    # Best chunks kept, in order, and as many as fit.
    assert [h.doc_id for h in citations] == [
        f"doc{i}.md" for i in range(len(citations))
    ]
    assert 0 < len(citations) < len(HITS)
    assert chunks[-1].prompt_tokens + 16 <= 4000


async def test_a_prompt_that_fits_is_counted_once_and_keeps_every_chunk() -> None:
    engine = ByteEngine(window=100_000)

    citations, _ = await answer(pipeline(engine, HITS[:5]), "how?")

    assert len(engine.counted) == 1
    assert len(citations) == 5
