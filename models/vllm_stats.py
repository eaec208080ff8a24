"""What vLLM reports, read into plain data: a request's timings from its
`RequestStateStats`, and the latest scheduler gauges through a stat logger."""

from __future__ import annotations

from typing import Any


def request_metrics(stats: Any) -> dict[str, float]:
    """Per-request timings from vLLM's `RequestStateStats`, in seconds.

    The engine-core timestamps (queued/scheduled/first/last token) share one
    monotonic clock; `first_token_latency` is measured by the front end from
    arrival. A timestamp vLLM did not record is 0, and what depends on it is
    left out rather than guessed.
    """
    if stats is None:
        return {}
    queued = float(getattr(stats, "queued_ts", 0.0))
    scheduled = float(getattr(stats, "scheduled_ts", 0.0))
    first = float(getattr(stats, "first_token_ts", 0.0))
    last = float(getattr(stats, "last_token_ts", 0.0))
    ttft = float(getattr(stats, "first_token_latency", 0.0))
    metrics: dict[str, float] = {}
    if queued and scheduled:
        metrics["queue_s"] = scheduled - queued
    if ttft:
        metrics["ttft_s"] = ttft
    if scheduled and first:
        metrics["prefill_s"] = first - scheduled
    if first and last:
        metrics["decode_s"] = last - first
    return metrics


def gauge_logger_class(sink: dict[str, Any]) -> type:
    """A vLLM stat logger that keeps the latest `SchedulerStats` in `sink`.

    vLLM builds one per engine from the class, so the sink is bound by closure.
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class GaugeStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                sink["scheduler"] = scheduler_stats

        def log_engine_initialized(self) -> None:
            pass

    return GaugeStatLogger
