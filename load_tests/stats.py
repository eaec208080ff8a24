"""Percentiles and latency summaries (pure Python, no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between closest ranks.

    This is numpy's default ("linear", Hyndman & Fan type 7) method, so the
    numbers match what `numpy.percentile` and most dashboards report.

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
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(data[lo])
    return float(data[lo] + (data[hi] - data[lo]) * (pos - lo))


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
