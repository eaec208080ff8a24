"""The `releases` config section: which releases a graph serves, their
starting weights, warm-up, grace period, canary policy, quality gate and fault
injection."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from releases.canary import CanaryPolicy
from releases.quality import QualityPolicy

DEFAULT_WARMUP = [
    "How does ragserve batch requests?",
    "What is retrieval augmented generation?",
    "How do I roll back a release?",
]


class FaultInjection(BaseModel):
    """A deliberately worse release, to rehearse the canary judge. Recorded into
    a release by `ragserve release create --config`; applies to that release."""

    model_config = ConfigDict(extra="forbid")

    delay_ms: float = Field(0.0, ge=0, description="Added before each answer.")
    error_rate: float = Field(
        0.0, ge=0, le=1, description="Share of requests answered with a 500."
    )


class ReleasesConfig(BaseModel):
    """Releases served together in one graph."""

    model_config = ConfigDict(extra="forbid")

    registry: str | None = Field(
        None,
        description="Registry folder; null: $RAGSERVE_REGISTRY, else <cache>/releases.",
    )
    serve: list[str] = Field(
        default_factory=list,
        description="Releases to serve (`ragserve serve --release`); empty: one "
        "release made of this config (`--index`).",
    )
    weights: dict[str, int] = Field(
        default_factory=dict,
        description="Starting percent per release (sum 100); empty: the first "
        "release takes 100.",
    )
    shadow: dict[str, int] = Field(
        default_factory=dict, description="Starting mirrored percent per release."
    )
    warmup_queries: list[str] = Field(
        default_factory=lambda: list(DEFAULT_WARMUP),
        description="Questions sent through each release's whole path before "
        "it takes weight.",
    )
    grace_period_s: float = Field(
        300.0,
        ge=0,
        description="How long a release that lost all its traffic stays "
        "deployed and warm (a rollback is instant); then the deployments only "
        "it uses scale to zero until `ragserve release restore`.",
    )
    canary: CanaryPolicy = Field(
        default_factory=CanaryPolicy, description="Automatic canary judgement."
    )
    quality: QualityPolicy = Field(
        default_factory=QualityPolicy,
        description="How much worse a candidate's stored eval may be than the "
        "stable release's before `release promote` refuses it.",
    )
    fault: FaultInjection = Field(
        default_factory=FaultInjection,
        description="Injected delay/errors (rehearsing canaries).",
    )

    @model_validator(mode="after")
    def _weights_match_serve(self) -> ReleasesConfig:
        for field, table in (("weights", self.weights), ("shadow", self.shadow)):
            unknown = sorted(set(table) - set(self.serve))
            if unknown:
                raise ValueError(
                    f"releases.{field} names {', '.join(unknown)}, not in "
                    f"releases.serve ({', '.join(self.serve) or 'empty'})"
                )
        if self.weights and sum(self.weights.values()) != 100:
            raise ValueError(
                f"releases.weights must sum to 100 over releases.serve, got "
                f"{sum(self.weights.values())}"
            )
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("releases.weights must not be negative")
        if len(set(self.serve)) != len(self.serve):
            raise ValueError("releases.serve names a release twice")
        return self
