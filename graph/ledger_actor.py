"""The one ledger all ingress replicas share, as a named, detached Ray actor.

Knows how to find or start the actor and how to call it without blocking the
event loop (admission and slot waits are awaited; token charges and finishes
are sent without waiting, in order); the bookkeeping is `tenants.ledger`.
Detached, so its counters outlive any ingress replica (and app redeploys);
restarted by Ray if its process dies: today's token counts and this minute's
rpm and tpm windows come back from the tenant database; concurrency starts over.
"""

from __future__ import annotations

from typing import Any

from graph.config import RagServingArgs
from tenants.config import resolve_db_url
from tenants.ledger import Ledger, Slot

ACTOR_NAME = "ragserve-tenant-ledger"
NAMESPACE = "ragserve"


def ledger_options(args: RagServingArgs) -> dict[str, Any]:
    t = args.tenants
    fair = t.fair_share
    slots = fair.max_inflight or args.models.generator.max_num_seqs
    return {
        "window_s": t.window_s,
        "lease_timeout_s": t.lease_timeout_s,
        "slots": slots,
        # at least one slot stays shared (FairShare refuses reserving them all)
        "reserved_slots": min(fair.reserved_slots, slots - 1),
        "max_queued": args.deployments.generator.max_queued_requests,
        "prompt_token_weight": fair.prompt_token_weight,
        "completion_token_weight": fair.completion_token_weight,
        "usage_db": resolve_db_url(t.db),
    }


def _app_name() -> str:
    """One ledger per Serve application (its replicas share it)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().app_name)
    except Exception:  # outside a replica
        return "default"


class ActorLedger:
    """`Ledger`'s interface over the shared actor."""

    def __init__(self, args: RagServingArgs, name: str | None = None) -> None:
        import ray

        name = name or f"{ACTOR_NAME}-{_app_name()}"
        self._actor = (
            ray.remote(Ledger)
            .options(
                name=name,
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_restarts=-1,
                max_concurrency=10_000,
            )
            .remote(**ledger_options(args), usage_scope=name)
        )

    async def admit(self, tenant: str, limits: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._actor.admit.remote(tenant, limits)
        return result

    async def acquire(self, lease: str, weight: float) -> Slot:
        return Slot(*await self._actor.acquire.remote(lease, weight))

    def charge(self, lease: str, prompt_tokens: int, completion_tokens: int) -> None:
        self._actor.charge.remote(lease, prompt_tokens, completion_tokens)

    def release_slot(self, lease: str) -> None:
        self._actor.release_slot.remote(lease)

    def finish(self, lease: str) -> None:
        self._actor.finish.remote(lease)

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._actor.stats.remote()
        return result


class LocalLedger:
    """The same interface over an in-process `Ledger` (unit tests, one process)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def admit(self, tenant: str, limits: dict[str, Any]) -> dict[str, Any]:
        return await self.ledger.admit(tenant, limits)

    async def acquire(self, lease: str, weight: float) -> Slot:
        return await self.ledger.acquire(lease, weight)

    def charge(self, lease: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.ledger.charge(lease, prompt_tokens, completion_tokens)

    def release_slot(self, lease: str) -> None:
        self.ledger.release_slot(lease)

    def finish(self, lease: str) -> None:
        self.ledger.finish(lease)

    async def stats(self) -> dict[str, Any]:
        return self.ledger.stats()
