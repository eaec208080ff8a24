"""What a search is asked for and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

SearchKind = Literal["dense", "sparse", "hybrid"]


@dataclass(frozen=True)
class SearchMode:
    """How the first stage ranks chunks.

    Attributes:
        mode: "dense": FAISS nearest neighbours of the query vector;
            "sparse": BM25 over the chunk texts; "hybrid": both lists fused
            by reciprocal rank fusion.
        rrf_k: the RRF constant for "hybrid".
    """

    mode: SearchKind = "dense"
    rrf_k: int = 60


DENSE = SearchMode()


@dataclass
class Hit:
    """One retrieved chunk.

    Attributes:
        chunk_id: row of the chunk in the index.
        doc_id: the source document, as a path relative to the docs folder.
        text: the chunk's text.
        score: the first stage's score, higher is closer: cosine (dense),
            BM25 (sparse) or the RRF sum (hybrid). After reranking, the
            reranker's score.
        title: nearest heading above the chunk, when the format has headings.
        cosine: the query's cosine with the chunk, when known (always in
            dense mode); a fusion reranker reuses it.
    """

    chunk_id: int
    doc_id: str
    text: str
    score: float
    title: str | None = None
    cosine: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
