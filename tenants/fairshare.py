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
- Each granted request carries an engine priority (`priority`), so the
  engine's own queue shares batch places by tenant too.
- `reserved` of the slots go only to a tenant with nothing running, so a
  newcomer starts at once instead of waiting for one of a busy tenant's long
  generations to end (admission cannot preempt). With `reserved=0` it is
  strictly work-conserving (a tenant alone gets every slot); with the default
  of 1 a tenant alone gets all but one, and any other tenant's first request
  takes the last one without waiting.
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
    """VTC admission over `capacity` slots, `reserved` of them for newcomers."""

    def __init__(self, capacity: int, reserved: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if not 0 <= reserved < capacity:
            raise ValueError(
                f"reserved slots must be at least 0 and fewer than the {capacity} "
                f"slots, got {reserved}"
            )
        self.capacity = capacity
        self.reserved = reserved
        self.running = 0
        self._tenants: dict[str, _State] = {}
        self._owner: dict[str, str] = {}  # ticket -> tenant (queued or running)
        self._granted: dict[str, int] = {}  # running ticket -> engine priority
        self._order = itertools.count()

    def _state(self, tenant: str, weight: float) -> _State:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._tenants[tenant] = _State(queued=deque())
        st.weight = weight
        return st

    def _lift(self, st: _State) -> None:
        """A tenant returning from idle starts at the least active counter."""
        if not st.active():
            floor = [s.counter for s in self._tenants.values() if s.active()]
            if floor:
                st.counter = max(st.counter, min(floor))

    def request(self, tenant: str, weight: float, ticket: str) -> list[str]:
        """Queue `ticket` for `tenant`; returns the tickets granted a slot now
        (this one, when a slot is free)."""
        st = self._state(tenant, weight)
        self._lift(st)
        assert st.queued is not None
        st.queued.append((next(self._order), ticket))
        self._owner[ticket] = tenant
        return self._dispatch()

    def adopt(self, tenant: str, weight: float, ticket: str, priority: int) -> None:
        """Count `ticket` as running (granted by an earlier scheduler that
        died; its generation goes on): it holds a slot, and its tenant is
        active, until `done`. A known ticket is left as it is."""
        if ticket in self._owner:
            return
        st = self._state(tenant, weight)
        self._lift(st)
        self._owner[ticket] = tenant
        self._granted[ticket] = priority
        st.running += 1
        self.running += 1

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
            del self._granted[ticket]
            st.running -= 1
            self.running -= 1
        else:
            assert st.queued is not None
            st.queued = deque(q for q in st.queued if q[1] != ticket)
        return self._dispatch()

    def _dispatch(self) -> list[str]:
        granted = []
        while self.running < self.capacity:
            shared_free = self.running < self.capacity - self.reserved
            waiting = [
                (st.counter, st.queued[0][0], name)
                for name, st in self._tenants.items()
                if st.queued and (shared_free or st.running == 0)
            ]
            if not waiting:
                break
            _, _, name = min(waiting)
            st = self._tenants[name]
            assert st.queued is not None
            _, ticket = st.queued.popleft()
            # its rank among the tenant's running requests, over its weight
            self._granted[ticket] = int(st.running / st.weight)
            st.running += 1
            self.running += 1
            granted.append(ticket)
        return granted

    def priority(self, ticket: str) -> int:
        """The engine priority of a running ticket (lower goes first): its rank
        among its tenant's running requests when granted, over the tenant's
        weight. A tenant's first request ranks 0 however busy another tenant
        is, so in the engine's own queue (and when it must preempt for KV
        cache) each tenant's n-th request comes before anyone's (n+1)-th:
        batch places shared by weight, not by who submitted first."""
        return self._granted.get(ticket, 0)

    def holds(self, ticket: str) -> bool:
        """Whether `ticket` is queued or running."""
        return ticket in self._owner

    def counters(self) -> dict[str, float]:
        return {name: st.counter for name, st in self._tenants.items()}

    def queued(self) -> dict[str, int]:
        return {name: len(st.queued or ()) for name, st in self._tenants.items()}
