"""The tenant record and its limits, validated; knows no storage."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency", "daily_tokens")


class TenantError(Exception):
    """A tenant operation that cannot be done; the message is one line."""


@dataclass(frozen=True)
class Limits:
    """Per-tenant limits; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    daily_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TenantError(f"--{_flag(name)} must be a whole number")
            if value <= 0:
                raise TenantError(
                    f"--{_flag(name)} must be a positive number, got {value}"
                )


@dataclass(frozen=True)
class Tenant:
    """One tenant: its key's hash (never the key), limits, weight, releases."""

    name: str
    key_hash: str
    key_hint: str
    limits: Limits = field(default_factory=Limits)
    weight: float = 1.0
    releases: tuple[str, ...] | None = None
    revoked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        check_name(self.name)
        check_weight(self.weight)
        if self.releases is not None:
            check_releases(self.releases)

    def allows_release(self, release: str | None) -> bool:
        """Whether this tenant may use `release` (None: the default route)."""
        return self.releases is None or release is None or release in self.releases

    def public(self) -> dict[str, Any]:
        """What `tenant show` and the audit log may carry (no hash)."""
        out = asdict(self)
        out.pop("key_hash")
        out["limits"] = asdict(self.limits)
        out["releases"] = list(self.releases) if self.releases is not None else None
        return out

    def updated(self, **changes: Any) -> Tenant:
        return replace(self, **changes)


def check_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise TenantError(
            f"tenant name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )


def check_weight(weight: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TenantError("--weight must be a number")
    if not weight > 0 or weight != weight or weight == float("inf"):
        raise TenantError(f"--weight must be a positive number, got {weight}")


def check_releases(releases: tuple[str, ...]) -> None:
    if not releases or any(not r or not NAME_RE.match(r) for r in releases):
        raise TenantError(
            "--releases must be a comma-separated list of release names, "
            f"got {','.join(releases)!r}"
        )


def parse_releases(text: str | None) -> tuple[str, ...] | None:
    """`A,B` -> ("A", "B"); None stays None (all releases)."""
    if text is None:
        return None
    parts = tuple(p.strip() for p in text.split(","))
    check_releases(parts)
    return parts


def _flag(name: str) -> str:
    return name.replace("_", "-")
