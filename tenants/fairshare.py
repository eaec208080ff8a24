"""Fair share by virtual token counters (VTC; Sheng et al., OSDI'24) over a
fixed number of generation slots. Pure scheduling over tickets and numbers:
the caller maps tickets to whatever wakes its waiting requests.

- Each tenant has a counter of weighted service: cost / weight, where cost is
  what its requests really took from the generator (prompt tokens including
  the retrieved context, plus completion tokens, each with its own weight).
- When a slot is free, the backlogged tenant with the least counter goes next
  (its oldest ticket); ties go to the earliest ticket.
- A tenant that becomes active again (no queued or running work) is lifted to
  the least counter among active tenants, so idle time earns no credit.
- Work-conserving: a free slot is never left idle while anyone waits, so a
  tenant alone gets every slot.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass


@dataclass
class _State:
    counter: float = 0.0
    weight: float = 1.0
    queued: deque[tuple[int, str]] | None = None
    running: int = 0

    def active(self) -> bool:
        return bool(self.queued) or self.running > 0


class FairShare:
    """VTC admission over `capacity` slots."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.running = 0
        self._tenants: dict[str, _State] = {}
        self._owner: dict[str, str] = {}  # ticket -> tenant (queued or running)
        self._granted: set[str] = set()
        self._order = itertools.count()

    def _state(self, tenant: str, weight: float) -> _State:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._tenants[tenant] = _State(queued=deque())
        st.weight = weight
        return st

    def request(self, tenant: str, weight: float, ticket: str) -> list[str]:
        """Queue `ticket` for `tenant`; returns the tickets granted a slot now
        (this one, when a slot is free)."""
        st = self._state(tenant, weight)
        if not st.active():
            floor = [s.counter for s in self._tenants.values() if s.active()]
            if floor:
                st.counter = max(st.counter, min(floor))
        assert st.queued is not None
        st.queued.append((next(self._order), ticket))
        self._owner[ticket] = tenant
        return self._dispatch()

    def charge(self, tenant: str, cost: float) -> None:
        """Add `cost` units of service to `tenant`'s counter (divided by weight)."""
        st = self._tenants.get(tenant)
        if st is not None and cost > 0:
            st.counter += cost / st.weight

    def done(self, ticket: str) -> list[str]:
        """`ticket` finished (or gave up while queued); returns the tickets now
        granted."""
        tenant = self._owner.pop(ticket, None)
        if tenant is None:
            return []
        st = self._tenants[tenant]
        if ticket in self._granted:
            self._granted.discard(ticket)
            st.running -= 1
            self.running -= 1
        else:
            assert st.queued is not None
            st.queued = deque(q for q in st.queued if q[1] != ticket)
        return self._dispatch()

    def _dispatch(self) -> list[str]:
        granted = []
        while self.running < self.capacity:
            waiting = [
                (st.counter, st.queued[0][0], name)
                for name, st in self._tenants.items()
                if st.queued
            ]
            if not waiting:
                break
            _, _, name = min(waiting)
            st = self._tenants[name]
            assert st.queued is not None
            _, ticket = st.queued.popleft()
            st.running += 1
            self.running += 1
            self._granted.add(ticket)
            granted.append(ticket)
        return granted

    def counters(self) -> dict[str, float]:
        return {name: st.counter for name, st in self._tenants.items()}

    def queued(self) -> dict[str, int]:
        return {name: len(st.queued or ()) for name, st in self._tenants.items()}
