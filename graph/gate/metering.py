"""What one generation costs its tenant: the fair-share slot it waits for and
the tokens charged to the shared ledger as they stream.

Knows the ledger's interface (`acquire`, `charge`) and the generator's chunks;
knows nothing of keys, HTTP or the counting itself (`tenants.ledger`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from graph.errors import APIError
from models.generation import Chunk
from telemetry.metrics import metrics
from telemetry.tracing import record_interval

if TYPE_CHECKING:
    from graph.gate.admission import Admission

CHARGE_EVERY = 16  # streamed tokens per ledger update


async def wait_for_slot(ledger: Any, adm: Admission, tenant_label: str) -> int:
    """Wait for a fair-share slot; returns its engine priority (lower first).

    The wait is a `queue.fair_share` span under the current one and a
    `fair_share` queue wait in `ragserve_queue_wait_ms`, so a trace shows a
    request held back for other tenants' turns.

    Raises:
        APIError: 503 `overloaded` when the fair-share queue is full.
    """
    start = time.time_ns()
    slot = await ledger.acquire(adm.lease, adm.principal.weight)
    end = time.time_ns()
    wait_ms = (end - start) / 1e6
    record_interval(
        "queue.fair_share",
        start,
        end,
        attributes={
            "queue.wait_ms": wait_ms,
            "tenant": tenant_label,
            "fair_share.priority": int(slot.priority),
            "fair_share.status": str(slot.status),
        },
    )
    metrics().queue_wait("generator", "fair_share", wait_ms, adm.release or "")
    if slot.status == "full":  # as the generator's own queue would
        raise APIError(
            503,
            "The server is at capacity; retry after the indicated delay.",
            code="overloaded",
            retry_after=1,
        )
    return int(slot.priority)


async def charged(
    stream: AsyncIterator[Chunk], adm: Admission, ledger: Any
) -> AsyncIterator[Chunk]:
    """`stream`, its completion tokens charged every `CHARGE_EVERY` and the
    final usage reconciled; what was streamed is charged however it ends."""
    lease = adm.lease or ""
    counted = pending = 0
    final = False
    try:
        async for chunk in stream:
            if chunk.finish_reason is None:
                pending += 1 if chunk.text else 0
                if pending >= CHARGE_EVERY:
                    ledger.charge(lease, 0, pending)
                    counted, pending = counted + pending, 0
            else:
                final = True
                ledger.charge(
                    lease, chunk.prompt_tokens, chunk.completion_tokens - counted
                )
                adm.prompt_tokens += chunk.prompt_tokens
                adm.completion_tokens += chunk.completion_tokens
            yield chunk
    finally:
        if not final:
            if pending:
                ledger.charge(lease, 0, pending)
            adm.completion_tokens += counted + pending
