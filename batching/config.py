"""Batch settings for one node."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchConfig(BaseModel):
    """How one node groups concurrent requests (`ray.serve.batch`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="False runs each request alone (for benchmarks)."
    )
    max_batch_size: int = Field(16, ge=1, description="Requests per batch at most.")
    batch_wait_timeout_s: float = Field(
        0.01,
        ge=0.0,
        le=10.0,
        description="How long a batch waits to fill after its first request.",
    )
