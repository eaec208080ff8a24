"""Prometheus metrics through Ray Serve's metrics API (exported by Ray's agent).

Each metric carries Serve's own `deployment`, `replica` and `application`
tags, and the `release` the request was routed to, so dashboards and
autoscaling policies can split by node and by release. Outside a Serve
replica (unit tests, `ragserve ask`) recording is a no-op.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("ragserve.telemetry")

_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class Metrics:
    """The graph's Prometheus series (created lazily, once per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] | None = None
        self._disabled = False

    def _get(self) -> dict[str, Any] | None:
        if self._metrics is not None or self._disabled:
            return self._metrics
        with self._lock:
            if self._metrics is None and not self._disabled:
                try:
                    self._metrics = _create()
                except Exception:  # not inside Ray: nothing to export to
                    logger.debug("metrics disabled", exc_info=True)
                    self._disabled = True
        return self._metrics

    def queue_wait(
        self, node: str, kind: str, wait_ms: float, release: str = ""
    ) -> None:
        """A request's wait: kind is `batch`, `handle` or `engine`."""
        m = self._get()
        if m:
            tags = {"node": node, "queue": kind, "release": release}
            m["queue_wait"].observe(wait_ms, tags=tags)

    def batch_size(self, node: str, size: int, release: str = "") -> None:
        m = self._get()
        if m:
            m["batch_size"].observe(size, tags={"node": node, "release": release})

    def generation(
        self,
        ttft_ms: float | None,
        itl_ms: list[float],
        completion_tokens: int,
        release: str = "",
    ) -> None:
        m = self._get()
        if not m:
            return
        tags = {"release": release}
        if ttft_ms is not None:
            m["ttft"].observe(ttft_ms, tags=tags)
        for gap in itl_ms:
            m["itl"].observe(gap, tags=tags)
        if completion_tokens:
            m["tokens"].inc(completion_tokens, tags=tags)

    def gpu_memory(self, node: str, attrs: dict[str, int]) -> None:
        m = self._get()
        if not m:
            return
        for key, value in attrs.items():
            if key.startswith("gpu.memory."):
                kind = key.removeprefix("gpu.memory.").removesuffix("_bytes")
                m["gpu_memory"].set(value, tags={"node": node, "kind": kind})

    def request(
        self,
        release: str,
        route: str,
        status: int,
        latency_ms: float,
        ttft_ms: float | None,
        shadow: bool = False,
    ) -> None:
        """One answered request (or shadow mirror) of a release, at the ingress."""
        m = self._get()
        if not m:
            return
        tags = {"release": release, "route": route, "shadow": str(shadow).lower()}
        m["requests"].inc(tags={**tags, "status": str(status)})
        m["latency"].observe(latency_ms, tags=tags)
        if ttft_ms is not None:
            m["request_ttft"].observe(ttft_ms, tags=tags)

    def kv_cache_usage(self, usage: float) -> None:
        m = self._get()
        if m:
            m["kv_cache"].set(usage)

    def tenant_request(
        self, tenant: str, route: str, status: int, latency_ms: float
    ) -> None:
        """One answered request (label `tenant`: configured names only)."""
        m = self._get()
        if not m:
            return
        tags = {"tenant": tenant, "route": route, "status": str(status)}
        m["tenant_requests"].inc(1, tags=tags)
        m["tenant_latency"].observe(latency_ms, tags={"tenant": tenant, "route": route})

    def tenant_tokens(self, tenant: str, prompt: int, completion: int) -> None:
        m = self._get()
        if not m:
            return
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n > 0:
                m["tenant_tokens"].inc(n, tags={"tenant": tenant, "kind": kind})

    def rate_limited(self, tenant: str, code: str) -> None:
        m = self._get()
        if m:
            m["rate_limited"].inc(1, tags={"tenant": tenant, "code": code})

    def feedback(self, release: str, rating: int) -> None:
        m = self._get()
        if m:
            m["feedback"].inc(1, tags={"release": release, "rating": str(rating)})


def _create() -> dict[str, Any]:
    import ray
    from ray.serve import metrics

    if not ray.is_initialized():
        raise RuntimeError("ray is not initialized")
    return {
        **_step_metrics(metrics),
        **_ingress_metrics(metrics),
        **_tenant_metrics(metrics),
    }


def _step_metrics(metrics: Any) -> dict[str, Any]:
    """The steps' series: queues, batches, generation, GPU and KV cache."""
    return {
        "queue_wait": metrics.Histogram(
            "ragserve_queue_wait_ms",
            description="Time a request waited before its step ran, by queue.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("node", "queue", "release"),
        ),
        "batch_size": metrics.Histogram(
            "ragserve_batch_size",
            description="Size of the batch each request landed in.",
            boundaries=_SIZE_BOUNDARIES,
            tag_keys=("node", "release"),
        ),
        "ttft": metrics.Histogram(
            "ragserve_time_to_first_token_ms",
            description="Generator: time to the first token.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("release",),
        ),
        "itl": metrics.Histogram(
            "ragserve_inter_token_latency_ms",
            description="Generator: gap between streamed chunks.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            tag_keys=("release",),
        ),
        "tokens": metrics.Counter(
            "ragserve_generated_tokens_total",
            description="Completion tokens generated (rate() gives tokens/s).",
            tag_keys=("release",),
        ),
        "gpu_memory": metrics.Gauge(
            "ragserve_gpu_memory_bytes",
            description="GPU memory by kind (allocated/reserved: torch; "
            "used/total: NVML).",
            tag_keys=("node", "kind"),
        ),
        "kv_cache": metrics.Gauge(
            "ragserve_kv_cache_usage",
            description="Generator: fraction of the KV cache in use.",
        ),
    }


def _ingress_metrics(metrics: Any) -> dict[str, Any]:
    """The ingress's series by release and route, and feedback."""
    return {
        "requests": metrics.Counter(
            "ragserve_requests_total",
            description="Requests answered at the ingress, by release, route, "
            "status and whether a shadow mirror.",
            tag_keys=("release", "route", "status", "shadow"),
        ),
        "latency": metrics.Histogram(
            "ragserve_request_latency_ms",
            description="End-to-end latency at the ingress (last byte), by release.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("release", "route", "shadow"),
        ),
        "request_ttft": metrics.Histogram(
            "ragserve_request_ttft_ms",
            description="Time to the first generated chunk at the ingress, by release.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("release", "route", "shadow"),
        ),
        "feedback": metrics.Counter(
            "ragserve_feedback_total",
            description="User feedback on completions by release and rating.",
            tag_keys=("release", "rating"),
        ),
    }


def _tenant_metrics(metrics: Any) -> dict[str, Any]:
    """The tenant gate's series (configured tenants only, by name)."""
    return {
        "tenant_requests": metrics.Counter(
            "ragserve_tenant_requests_total",
            description="Answered requests by tenant, route and status.",
            tag_keys=("tenant", "route", "status"),
        ),
        "tenant_latency": metrics.Histogram(
            "ragserve_tenant_request_latency_ms",
            description="Request latency at the ingress (to the last byte), by tenant.",
            boundaries=_MS_BOUNDARIES,
            tag_keys=("tenant", "route"),
        ),
        "tenant_tokens": metrics.Counter(
            "ragserve_tenant_tokens_total",
            description="Tokens by tenant: prompt (with retrieved context) and "
            "completion.",
            tag_keys=("tenant", "kind"),
        ),
        "rate_limited": metrics.Counter(
            "ragserve_rate_limited_total",
            description="Requests refused with 429, by tenant and code.",
            tag_keys=("tenant", "code"),
        ),
    }


_METRICS = Metrics()


def metrics() -> Metrics:
    """This process's metrics (a function, so deployments pickled by value
    reference it by name instead of copying its lock)."""
    return _METRICS
