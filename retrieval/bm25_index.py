"""The sparse side of an index: a bm25s BM25 index over the chunks, on disk.

Knows bm25s (tokenising, indexing, saving, loading, scoring) and that BM25
row r is line r of chunks.jsonl; knows nothing of FAISS, embedders or how
dense and sparse lists are fused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import RetrievalError, index_corrupt

# bm25s logs an info line per query with no known token; that is expected.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# English stopwords out, as the fusion reranker's BM25 does; no stemmer, so
# identifiers, config keys and error codes match as written.
_STOPWORDS = "en"


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise RetrievalError("bm25s is not installed; run 'pip install bm25s'") from exc
    return bm25s


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased word tokens of each text, English stopwords removed."""
    tokens: list[list[str]] = _bm25s().tokenize(
        texts, stopwords=_STOPWORDS, return_ids=False, show_progress=False
    )
    return tokens


def build_bm25(texts: list[str]) -> Any:
    """A BM25 index of `texts`, row r being texts[r].

    IDF and the mean length are corpus-wide, so an index is built whole for
    each version (tokenising is the cost; no vectors are involved).
    """
    corpus = [doc or [""] for doc in tokenize(texts)]
    index = _bm25s().BM25()
    index.index(corpus, show_progress=False)
    return index


def save_bm25(index: Any, folder: Path) -> list[str]:
    """Write `index` into `folder` (created); returns the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    index.save(str(folder), show_progress=False)
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def load_bm25(folder: Path, index_dir: Path) -> Any:
    """The BM25 index saved in `folder` of the index `index_dir`."""
    try:
        return _bm25s().BM25.load(str(folder), show_progress=False)
    except (OSError, ValueError, KeyError) as exc:
        raise index_corrupt(index_dir, "its bm25 index cannot be read") from exc


def bm25_search(
    index: Any, queries: list[str], k: int
) -> list[list[tuple[int, float]]]:
    """Up to `k` (row, score) pairs per query, best first; rows that share no
    term with the query are left out (a query of stopwords finds nothing)."""
    n = int(index.scores["num_docs"])
    out: list[list[tuple[int, float]]] = []
    for tokens in tokenize(queries):
        ids = index.get_tokens_ids(tokens)
        if not ids or n == 0:
            out.append([])
            continue
        scores = np.asarray(index.get_scores_from_ids(ids), dtype=np.float64)
        top = min(k, n)
        rows = np.argpartition(-scores, top - 1)[:top]
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        out.append([(int(r), float(scores[r])) for r in rows if scores[r] > 0.0])
    return out
