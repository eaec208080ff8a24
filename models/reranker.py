"""Rerankers: score (query, passage) pairs; higher is more relevant.

Knows cross-encoders and a lexical + dense fusion scorer; knows nothing of how
requests are queued or batched across callers (see `batching`).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
from cachetools import LRUCache

from batching.token_budget import split_by_token_budget
from models.embedder import Embedder, quiet_model_loading
from models.resolve import resolve_local_or_hub

#: (query, passages) or (query, passages, dense scores or None).
RerankItem = tuple[str, list[str]] | tuple[str, list[str], list[float] | None]


class Reranker(abc.ABC):
    """Scores passages against a query."""

    model_id: str

    @abc.abstractmethod
    def score(
        self, query: str, passages: list[str], dense: list[float] | None = None
    ) -> list[float]:
        """Score each passage for `query`.

        Args:
            query: the question.
            passages: the candidates.
            dense: the caller's cosine similarity of `query` and each passage
                under the graph's embedder, when it has them (the retrieval
                scores); a reranker that can use them need not embed again.

        Returns:
            One float per passage, in input order; only the order between
            passages of one query is meaningful.
        """

    def score_many(self, items: list[RerankItem]) -> list[list[float]]:
        """Score several (query, passages[, dense]) requests at once (one batch)."""
        return [self.score(*item) for item in items]


class CrossEncoderReranker(Reranker):
    """A sentence-transformers `CrossEncoder` (e.g. BAAI/bge-reranker-base).

    Pairs from all requests of a batch are sorted by length and cut into
    micro-batches under `max_batch_tokens`, so short pairs are not padded to
    the longest one.
    """

    def __init__(
        self,
        model: str,
        device: str | None = None,
        max_batch_tokens: int = 8192,
        max_length: int = 512,
        **kwargs: Any,
    ) -> None:
        from sentence_transformers import CrossEncoder

        quiet_model_loading()
        path = resolve_local_or_hub(model, "reranker")
        self.model_id = model
        self._model = CrossEncoder(path, device=device, max_length=max_length, **kwargs)
        self._max_batch_tokens = max_batch_tokens
        self._max_length = max_length

    def score(
        self, query: str, passages: list[str], dense: list[float] | None = None
    ) -> list[float]:
        return self.score_many([(query, passages)])[0]

    def score_many(self, items: list[RerankItem]) -> list[list[float]]:
        pairs = [(item[0], p) for item in items for p in item[1]]
        if not pairs:
            return [[] for _ in items]
        tokenizer = self._model.tokenizer
        lengths = [
            min(self._max_length, len(ids))
            for ids in tokenizer(
                [q for q, _ in pairs], [p for _, p in pairs], truncation=True
            )["input_ids"]
        ]
        flat = np.zeros(len(pairs), dtype=np.float32)
        for group in split_by_token_budget(lengths, self._max_batch_tokens):
            scores = self._model.predict(
                [pairs[i] for i in group],
                batch_size=len(group),
                show_progress_bar=False,
                convert_to_numpy=True,
            )
            flat[group] = np.asarray(scores, dtype=np.float32).reshape(-1)
        out: list[list[float]] = []
        start = 0
        for item in items:
            out.append(flat[start : start + len(item[1])].tolist())
            start += len(item[1])
        return out


class FusionReranker(Reranker):
    """BM25 over the candidates fused with the embedder's cosine similarity.

    The offline default: no installable package ships cross-encoder weights.
    Score = `dense_weight` * cosine + (1 - `dense_weight`) * BM25 min-max
    normalised within the query's candidates. The min-max spreads BM25 over
    [0, 1] while the top-k cosines of one query lie within ~0.2 of each other,
    so the lexical half weighs more than its share: at 0.6 it decided the
    order (`ragserve eval` on the bundled set: reranked section hit@1 0.70,
    0.78 at 0.8; docs/evaluation.md). When the caller passes the
    cosines it already has (the retrieval scores, from the same embedder),
    nothing is embedded; otherwise passage vectors are cached (LRU), since
    the same chunks come back for related questions.
    """

    def __init__(
        self,
        embedder: Embedder,
        dense_weight: float = 0.8,
        cache_size: int = 4096,
    ) -> None:
        if not 0.0 <= dense_weight <= 1.0:
            raise ValueError("dense_weight must be within [0, 1]")
        self._embedder = embedder
        self._dense_weight = dense_weight
        self._cache: LRUCache[str, np.ndarray] | None = (
            LRUCache(maxsize=cache_size) if cache_size > 0 else None
        )
        self.model_id = f"bm25+{embedder.model_id}"

    def score(
        self, query: str, passages: list[str], dense: list[float] | None = None
    ) -> list[float]:
        return self.score_many([(query, passages, dense)])[0]

    def score_many(self, items: list[RerankItem]) -> list[list[float]]:
        given = [item[2] if len(item) == 3 else None for item in items]
        unknown = [item for item, d in zip(items, given, strict=True) if d is None]
        vectors = self._vectors(
            [item[0] for item in unknown] + [p for item in unknown for p in item[1]]
        )
        out: list[list[float]] = []
        for item, known in zip(items, given, strict=True):
            query, passages = item[0], item[1]
            if not passages:
                out.append([])
                continue
            if known is not None and len(known) != len(passages):
                raise ValueError(
                    f"{len(known)} dense scores for {len(passages)} passages"
                )
            dense = np.asarray(
                known
                if known is not None
                else [float(vectors[query] @ vectors[p]) for p in passages],
                dtype=np.float64,
            )
            lexical = _minmax(_bm25_scores(query, passages))
            fused = self._dense_weight * dense + (1 - self._dense_weight) * lexical
            out.append(fused.tolist())
        return out

    def _vectors(self, texts: list[str]) -> dict[str, np.ndarray]:
        cache = self._cache if self._cache is not None else {}
        # A lookup refreshes the entry; a batch larger than the cache still
        # gets every vector, since they are collected here, not re-read.
        found = {t: cache[t] for t in dict.fromkeys(texts) if t in cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, vec in zip(missing, self._embedder.embed(missing), strict=True):
                found[text] = vec
                if self._cache is not None:
                    self._cache[text] = vec
        return found


def _bm25_scores(query: str, passages: list[str]) -> np.ndarray:
    import bm25s

    corpus = bm25s.tokenize(
        passages, stopwords="en", return_ids=False, show_progress=False
    )
    query_tokens = bm25s.tokenize(
        [query], stopwords="en", return_ids=False, show_progress=False
    )[0]
    # An empty document list entry breaks bm25s' vocabulary; give it a stand-in.
    corpus = [doc or ["\x00"] for doc in corpus]
    if not query_tokens:
        return np.zeros(len(passages))
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    return np.asarray(index.get_scores(query_tokens), dtype=np.float64)


def _minmax(x: np.ndarray) -> np.ndarray:
    span = float(x.max() - x.min()) if x.size else 0.0
    if span <= 0.0:
        return np.zeros_like(x)
    return (x - x.min()) / span
