"""Percentiles and latency summaries of a run's samples (numpy's percentile)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile, linear between closest ranks (`numpy.percentile`'s
    default, Hyndman & Fan type 7, what most dashboards report).

    Args:
        values: samples in any order.
        q: the percentile, 0 to 100.

    Returns:
        The percentile, or None when there are no samples.

    Raises:
        ValueError: q is outside 0..100.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarize(values_s: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, min, p50/p95/p99 and max of durations, in milliseconds.

    Args:
        values_s: durations in seconds.

    Returns:
        `{"count", "mean_ms", "min_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"}`;
        the timing fields are None when there are no samples.
    """
    out: dict[str, float | int | None] = {"count": len(values_s)}
    ms = [v * 1000.0 for v in values_s]
    out["mean_ms"] = sum(ms) / len(ms) if ms else None
    out["min_ms"] = min(ms) if ms else None
    for q in PERCENTILES:
        out[f"p{q}_ms"] = percentile(ms, q)
    out["max_ms"] = max(ms) if ms else None
    return out
