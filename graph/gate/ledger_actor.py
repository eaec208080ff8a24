"""The one ledger all ingress replicas share, as a named, detached Ray actor.

Knows how to find or start the actor and how to call it without blocking the
event loop (admission and slot waits are awaited; token charges and finishes
are sent without waiting, in order); the bookkeeping is `tenants.ledger`.
Detached, so its counters outlive any ingress replica (and app redeploys);
restarted by Ray if its process dies: today's token counts and this minute's
rpm and tpm windows come back from the tenant database, and each ingress
replica's renewal of the leases it holds (every `tenants.lease_renew_s`) gives
back concurrency and generation slots.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from graph.config import RagServingArgs
from tenants.config import resolve_db_url
from tenants.leases import HeldLeases
from tenants.ledger import Ledger, Slot

logger = logging.getLogger("ragserve.tenants")
ACTOR_NAME = "ragserve-tenant-ledger"
#: bumped when the actor's methods change, so that a detached ledger an older
#: ragserve left running (an upgrade in place) is replaced, not called: each
#: version's ledgers live in a namespace of their own (version 1's: "ragserve")
LEDGER_VERSION = 2
NAMESPACE = f"ragserve-ledger-v{LEDGER_VERSION}"
#: a lease its replica has not renewed for this many periods is freed
RENEWALS_MISSED = 10
#: a restarted ledger admits nobody under a concurrency limit for this many
#: renewal periods: one for a replica's call in flight to the dead ledger to
#: give up, one for its retry to land, one for a busy machine
HOLD_BACK_RENEWALS = 3
#: seconds before a renewal that failed is tried again
RETRY_S = 0.2


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
        "renew_timeout_s": RENEWALS_MISSED * t.lease_renew_s,
    }


class RestartableLedger(Ledger):
    """`Ledger` as Ray runs it: restarted after its process died, it admits
    nobody under a concurrency limit for `hold_back_s`, the time every ingress
    replica needs to renew the leases it holds (so the limit stays exact)."""

    def __init__(self, hold_back_s: float, **kwargs: Any) -> None:
        import ray

        super().__init__(**kwargs)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            logger.warning(
                "tenant ledger restarted: counts restored from the database; "
                "waiting %.1f s for the ingress replicas' leases",
                hold_back_s,
            )
            self.hold_back(hold_back_s)


def actor_name(app: str) -> str:
    """The ledger actor of Serve application `app` (in `NAMESPACE`; its counts
    in the tenant database are kept under this name, whatever the version)."""
    return f"{ACTOR_NAME}-{app}"


def _retire_older(app: str) -> None:
    """Stop the ledger an older ragserve started for `app`, if one runs."""
    import ray

    older = ["ragserve", *(f"ragserve-ledger-v{v}" for v in range(2, LEDGER_VERSION))]
    for namespace in older:
        try:
            ray.kill(ray.get_actor(actor_name(app), namespace), no_restart=True)
        except ValueError:  # none by that name
            continue
        logger.warning("stopped the tenant ledger of an older ragserve (%s)", namespace)


def _app_name() -> str:
    """One ledger per Serve application (its replicas share it)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().app_name)
    except Exception:  # outside a replica
        return "default"


class ActorLedger:
    """`Ledger`'s interface over the shared actor. Names each lease itself
    and renews the ones it holds every `tenants.lease_renew_s`, so the ledger
    frees them if this replica dies and takes them up if the ledger does."""

    def __init__(self, args: RagServingArgs, app: str | None = None) -> None:
        import ray

        app = app or _app_name()
        _retire_older(app)
        self._renew_s = args.tenants.lease_renew_s
        self._actor = (
            ray.remote(RestartableLedger)
            .options(
                name=actor_name(app),
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_restarts=-1,
                max_concurrency=10_000,
            )
            .remote(
                hold_back_s=HOLD_BACK_RENEWALS * self._renew_s,
                **ledger_options(args),
                usage_scope=actor_name(app),
            )
        )
        self.leases = HeldLeases()
        self._renewer: asyncio.Task[None] | None = None

    async def admit(self, tenant: str, limits: dict[str, Any]) -> dict[str, Any]:
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew())
        lease = self.leases.ask()
        granted = False
        try:
            result: dict[str, Any] = await self._actor.admit.remote(
                tenant, limits, self.leases.holder, lease
            )
            granted = bool(result["lease"])
        finally:
            self.leases.answered(lease, tenant, granted)
        return result

    async def acquire(self, lease: str, weight: float) -> Slot:
        self.leases.asking_slot(lease, weight)
        granted, priority = False, 0
        try:
            slot = Slot(*await self._actor.acquire.remote(lease, weight))
            granted, priority = slot.status == "ok", slot.priority
        finally:
            self.leases.slot_answered(lease, granted, priority)
        return slot

    def charge(self, lease: str, prompt_tokens: int, completion_tokens: int) -> None:
        self._actor.charge.remote(lease, prompt_tokens, completion_tokens)

    def release_slot(self, lease: str) -> None:
        self.leases.slot_released(lease)
        self._actor.release_slot.remote(lease)

    def finish(self, lease: str) -> None:
        self.leases.finished(lease)
        self._actor.finish.remote(lease)

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._actor.stats.remote()
        return result

    async def _renew(self) -> None:
        """Tell the ledger what this replica holds, while it holds anything
        (and once more after, so a lost `finish` is caught).

        A renewal answers in milliseconds; one that has not answered within a
        period was likely sent to a ledger that died, and Ray fails it only
        once it notices. So it is given up then and sent again soon: a call
        made while the ledger restarts waits for the new one and reaches it
        as soon as it is up, within its hold-back."""
        told_empty = True
        delay = self._renew_s
        while True:
            await asyncio.sleep(delay)
            delay = self._renew_s
            if told_empty and not self.leases:
                continue
            held, pending = self.leases.snapshot()
            try:
                call = self._actor.renew.remote(self.leases.holder, held, pending)
                await asyncio.wait_for(call, self._renew_s)
                told_empty = not held and not pending
            except Exception as err:  # the ledger restarting: tell the next soon
                logger.info("could not renew %d tenant leases: %s", len(held), err)
                delay = min(RETRY_S, self._renew_s)


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
