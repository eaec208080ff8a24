"""Reciprocal rank fusion: several ranked lists of chunk ids into one.

Knows RRF (Cormack et al., 2009: score = sum over lists of 1 / (k + rank));
knows nothing of how the lists were ranked.
"""

from __future__ import annotations

from collections.abc import Sequence


def reciprocal_rank_fusion(
    ranked: Sequence[Sequence[int]], k: int, limit: int
) -> list[tuple[int, float]]:
    """The `limit` best (id, fused score) pairs, best first.

    Args:
        ranked: lists of ids, each best first (rank 1 is the first).
        k: the RRF constant (>= 1): larger flattens the weight of the top
            ranks.
        limit: pairs to return at most.

    Returns:
        Pairs ordered by fused score; ties keep the order in which the ids
        were first met (the first list's order first).
    """
    if k < 1:
        raise ValueError(f"rrf k must be >= 1, got {k}")
    scores: dict[int, float] = {}
    for ids in ranked:
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    order = sorted(scores.items(), key=lambda item: -item[1])
    return order[:limit]
