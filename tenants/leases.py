"""What one ingress replica holds of the ledger: the leases it asked for and
was given, and where each one's generation slot stands, in the form the
ledger's `renew` takes. Plain bookkeeping, no Ray; `graph/gate/ledger_actor.py`
keeps one per replica and sends its `snapshot` every `tenants.lease_renew_s`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

#: lease -> (tenant, slot, weight, engine priority); slot is "held" (its
#: generation runs), "asking" (an acquire under way) or "none"
Snapshot = dict[str, tuple[str, str, float, int]]


@dataclass
class _Held:
    tenant: str
    slot: str = "none"
    weight: float = 1.0
    priority: int = 0


class HeldLeases:
    """One holder's leases, from the moment it asks for one until it is
    finished; so a restarted ledger can take them up and a lost `finish`
    or `release_slot` is caught."""

    def __init__(self) -> None:
        self.holder = uuid.uuid4().hex
        self._held: dict[str, _Held] = {}
        self._pending: set[str] = set()  # asked for, no answer yet

    def __bool__(self) -> bool:
        return bool(self._held or self._pending)

    def ask(self) -> str:
        """A name for the lease about to be asked for (pending until answered)."""
        lease = uuid.uuid4().hex
        self._pending.add(lease)
        return lease

    def answered(self, lease: str, tenant: str, granted: bool) -> None:
        self._pending.discard(lease)
        if granted:
            self._held[lease] = _Held(tenant)

    def asking_slot(self, lease: str, weight: float) -> None:
        held = self._held.get(lease)
        if held is not None:
            held.slot, held.weight = "asking", weight

    def slot_answered(self, lease: str, granted: bool, priority: int = 0) -> None:
        held = self._held.get(lease)
        if held is not None:
            held.slot, held.priority = ("held" if granted else "none"), priority

    def slot_released(self, lease: str) -> None:
        held = self._held.get(lease)
        if held is not None:
            held.slot = "none"

    def finished(self, lease: str) -> None:
        self._held.pop(lease, None)

    def snapshot(self) -> tuple[Snapshot, list[str]]:
        """(held, pending) as `Ledger.renew` takes them."""
        held = {
            lid: (h.tenant, h.slot, h.weight, h.priority)
            for lid, h in self._held.items()
        }
        return held, list(self._pending)
