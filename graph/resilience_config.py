"""`ResilienceConfig`: request deadlines and the retry of idempotent steps.

Knows the bounds a request lives within (its end-to-end deadline, how long a
retried step or a generation's start may wait); knows nothing of how they are
enforced (that is `graph.resilience`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ResilienceConfig(BaseModel):
    """Deadlines and retries of the ingress's calls to the step deployments."""

    model_config = ConfigDict(extra="forbid")

    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="End-to-end deadline of every request, streams included; "
        "past it the client gets a 504 envelope (mid-stream: a final SSE error "
        "event). A client may ask for less with the X-Request-Timeout header "
        "(seconds).",
    )
    step_retries: int = Field(
        1,
        ge=0,
        le=3,
        description="Retries of an idempotent step call (embed, retrieve, "
        "rerank) whose replica died; generation is never retried.",
    )
    step_retry_timeout_s: float = Field(
        60.0,
        gt=0,
        description="How long a retried step call may wait for a live or "
        "replacement replica; past it a 503 envelope with Retry-After.",
    )
    generate_start_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a generation may wait for its first token "
        "(replica pick-up, engine queue, prefill); past it a 503 envelope with "
        "Retry-After, as when no generator replica is running.",
    )
    retry_after_s: int = Field(
        5,
        ge=1,
        le=3600,
        description="Retry-After (seconds) sent with the 503s of a lost "
        "replica or a generation that could not start.",
    )

    @model_validator(mode="after")
    def _bounds_within_deadline(self) -> ResilienceConfig:
        # A default bound longer than a lowered deadline is simply cut by it.
        for name in ("step_retry_timeout_s", "generate_start_timeout_s"):
            value = getattr(self, name)
            if name in self.model_fields_set and value > self.request_timeout_s:
                raise ValueError(
                    f"resilience.{name} ({value}) must not exceed "
                    f"resilience.request_timeout_s ({self.request_timeout_s})"
                )
        return self
