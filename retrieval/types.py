"""What a search returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Hit:
    """One retrieved chunk.

    Attributes:
        chunk_id: row of the chunk in the index.
        doc_id: the source document, as a path relative to the docs folder.
        text: the chunk's text.
        score: similarity (cosine for the default inner-product index; higher
            is closer). After reranking, the reranker's score.
        title: nearest heading above the chunk, when the format has headings.
    """

    chunk_id: int
    doc_id: str
    text: str
    score: float
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
