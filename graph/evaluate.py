"""The eval's target in this process: the one-process graph's own pipeline,
each step timed (`ragserve eval` without `--url`).

Knows how `LocalGraph`'s pipeline is driven for an eval (retrieval with
`top_n = k` so every candidate is ranked, answers with the configured
retrieval and greedy sampling); the metrics are `evals`'.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from graph.config import RagServingArgs
from graph.local import LocalGraph
from graph.pipeline import RetrievalOptions, Steps
from models.generation import SamplingOptions
from retrieval.types import Hit

T = TypeVar("T")


class LocalTarget:
    """`LocalGraph` as an `evals.runner.EvalTarget`. The generator starts only
    when the first answer is asked for (retrieval-only evals load no LLM).

    Args:
        args: the config the graph runs with (a release's, or --index's).
        release: the release's name, for the result.
        max_tokens: completion tokens per answer.
    """

    def __init__(
        self, args: RagServingArgs, release: str | None = None, max_tokens: int = 128
    ) -> None:
        self.args = args
        self.release = release
        self.max_tokens = max_tokens
        self.graph = LocalGraph(args)
        self.rerank_enabled = args.retrieval.rerank
        self._times: dict[str, list[float]] = defaultdict(list)
        self._started = False
        s = self.graph.pipeline.steps
        self.graph.pipeline.steps = Steps(
            embed=self._timed("embed", s.embed),
            retrieve=self._timed("retrieve", s.retrieve),
            rerank=self._timed("rerank", s.rerank),
            generate=s.generate,
        )

    def _timed(self, name: str, fn: Callable[..., Awaitable[T]]) -> Any:
        async def timed(*args: Any) -> T:
            t0 = time.perf_counter()
            try:
                return await fn(*args)
            finally:
                self._times[name].append((time.perf_counter() - t0) * 1000)

        return timed

    def describe(self) -> dict[str, Any]:
        manifest = self.graph.retriever.manifest
        return {
            "mode": "local",
            "release": self.release,
            "index": str(self.args.retrieval.index_dir),
            "index_type": manifest.index_type,
            "documents": manifest.document_count,
            "chunks": manifest.chunk_count,
            "embedder": manifest.embedder_model_id,
            "reranker": self.graph.reranker.model_id if self.rerank_enabled else None,
            "reranker_config": self.args.models.reranker.model_dump(mode="json"),
            "prompt_template": self.args.retrieval.prompt_template,
        }

    async def retrieve(self, query: str, k: int, rerank: bool) -> list[Hit]:
        return await self.graph.pipeline.retrieve(
            query, RetrievalOptions(True, k, k, rerank)
        )

    async def answer(self, query: str) -> tuple[str, list[Hit]]:
        if not self._started:
            await self.graph.start()
            self._started = True
        cfg, gen = self.args.retrieval, self.args.models.generator
        t0 = time.perf_counter()
        answer = await self.graph.pipeline.answer(
            [{"role": "user", "content": query}],
            SamplingOptions(
                max_tokens=self.max_tokens,
                temperature=0.0,
                seed=0,
                repetition_penalty=gen.repetition_penalty,
            ),
            f"eval-{uuid.uuid4().hex}",
            RetrievalOptions(True, cfg.top_k, cfg.top_n, cfg.rerank),
        )
        text = "".join([chunk.text async for chunk in answer.stream])
        self._times["answer"].append((time.perf_counter() - t0) * 1000)
        return text, answer.citations

    def step_times(self) -> dict[str, list[float]]:
        return dict(self._times)

    def shutdown(self) -> None:
        if self._started:
            self.graph.shutdown()
