"""One admitted request and its caller, as the gate and the meter see them.

Knows the principal (tenant, static keys or anonymous) and what an admitted
request used; knows nothing of HTTP or of how limits are counted.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from tenants.records import Limits, Tenant

UNLIMITED = Limits()


@dataclass(frozen=True)
class Principal:
    """The caller: a tenant, the static `server.api_keys`, or anonymous."""

    name: str
    limits: Limits = UNLIMITED
    weight: float = 1.0
    releases: tuple[str, ...] | None = None

    @classmethod
    def of(cls, t: Tenant) -> Principal:
        return cls(t.name, t.limits, t.weight, t.releases)


@dataclass
class Admission:
    """One admitted request: its lease and what it used (for audit/metrics)."""

    principal: Principal
    lease: str | None
    route: str
    request_id: str
    trace_id: str | None
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    release: str | None = None  # set by the release router, when there is one
    completion_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


CURRENT: ContextVar[Admission | None] = ContextVar("ragserve_admission", default=None)


def current_admission() -> Admission | None:
    """The admission of the request being served (None outside one)."""
    return CURRENT.get()
