"""The `tenants` config section: where the tenant store and audit log live, and
how limits and fair share behave."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir
from pydantic import BaseModel, ConfigDict, Field, model_validator

DB_ENV = "RAGSERVE_TENANTS_DB"
AUDIT_ENV = "RAGSERVE_AUDIT_LOG"


def data_dir() -> Path:
    """`$RAGSERVE_DATA_DIR`, else the user data dir (~/.local/share/ragserve)."""
    return Path(os.environ.get("RAGSERVE_DATA_DIR") or user_data_dir("ragserve"))


def resolve_db_url(url: str | None) -> str:
    """The tenant store's SQLAlchemy URL: the given one, else $RAGSERVE_TENANTS_DB,
    else a SQLite file under the user data dir."""
    url = url or os.environ.get(DB_ENV)
    if url:
        return url
    path = data_dir() / "tenants.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def resolve_audit_path(path: str | None) -> Path:
    """The audit log: the given path, else $RAGSERVE_AUDIT_LOG, else
    `audit.jsonl` under the user data dir."""
    return Path(path or os.environ.get(AUDIT_ENV) or data_dir() / "audit.jsonl")


class FairShareConfig(BaseModel):
    """Virtual-token-counter fair share in front of the generator."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="Queue generator work fairly by tenant when saturated."
    )
    max_inflight: int | None = Field(
        None,
        ge=1,
        description="Generations running at once across all ingress replicas "
        "before requests queue; null: models.generator.max_num_seqs.",
    )
    reserved_slots: int = Field(
        1,
        ge=0,
        description="Slots only a tenant with nothing running may take, so its "
        "first request starts at once rather than after one of a busy tenant's "
        "generations (admission cannot preempt); 0: a tenant alone gets every slot.",
    )
    prompt_token_weight: float = Field(
        1.0, gt=0, description="Cost of one prompt token (retrieved context too)."
    )
    completion_token_weight: float = Field(
        2.0, gt=0, description="Cost of one completion token."
    )


class TenantsConfig(BaseModel):
    """Tenant store, audit log, limits and fair share."""

    model_config = ConfigDict(extra="forbid")

    db: str | None = Field(
        None,
        description="SQLAlchemy URL of the tenant store; null: $RAGSERVE_TENANTS_DB, "
        "else a SQLite file under the user data dir.",
    )
    audit_log: str | None = Field(
        None,
        description="Audit log (JSON Lines); null: $RAGSERVE_AUDIT_LOG, else "
        "audit.jsonl under the user data dir.",
    )
    refresh_s: float = Field(
        0.25,
        gt=0,
        le=1.0,
        description="How often each ingress replica re-reads the tenant store "
        "(a revoked key stops working within this, plus one read).",
    )
    window_s: float = Field(
        60.0,
        gt=0,
        description="Length of the rpm/tpm window (60: per minute as named; "
        "tests shorten it).",
    )
    lease_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A concurrency lease that no replica renews (a ledger used "
        "in one process) and is not returned within this is freed.",
    )
    lease_renew_s: float = Field(
        1.0,
        gt=0,
        le=10.0,
        description="How often each ingress replica tells the ledger which "
        "leases it holds: a lease not renewed for 10 of these (its replica "
        "died) is freed, and a restarted ledger takes up the ones still held.",
    )
    fair_share: FairShareConfig = Field(default_factory=FairShareConfig)

    @model_validator(mode="after")
    def _refresh_within_window(self) -> TenantsConfig:
        if self.refresh_s >= self.window_s:
            raise ValueError(
                f"tenants.refresh_s ({self.refresh_s}) must be below "
                f"tenants.window_s ({self.window_s})"
            )
        return self
