"""Each ingress replica's view of the tenant store: key hash -> tenant, re-read
on a background thread whenever the store's version changes (every
`refresh_s`), so a lookup never touches the database and a revoked key stops
working within `refresh_s` plus one read."""

from __future__ import annotations

import hmac
import logging
import threading

from tenants.keys import hash_key
from tenants.records import Tenant
from tenants.store import TenantStore

logger = logging.getLogger("ragserve.tenants")


class TenantDirectory:
    """A polled, in-memory copy of the store's tenants."""

    def __init__(self, store: TenantStore, refresh_s: float = 0.25) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._by_hash: dict[str, Tenant] = {}
        self._names: frozenset[str] = frozenset()
        self._count = 0
        self._version = -1
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(
            target=self._poll, name="tenant-directory", daemon=True
        )
        self._thread.start()

    def refresh(self) -> None:
        """Re-read the store if it changed since the last read."""
        version = self.store.version()
        if version == self._version:
            return
        tenants = self.store.tenants()
        self._by_hash = {t.key_hash: t for t in tenants}
        self._names = frozenset(t.name for t in tenants)
        self._count = len(tenants)
        self._version = version

    def _poll(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # a database hiccup: keep the last good copy
                logger.warning("tenant store refresh failed", exc_info=True)

    @property
    def configured(self) -> bool:
        """Whether any tenant exists (revoked ones too)."""
        return self._count > 0

    def lookup(self, key: str) -> Tenant | None:
        """The live (not revoked) tenant holding `key`, else None."""
        digest = hash_key(key)
        tenant = self._by_hash.get(digest)
        if tenant is None or tenant.revoked:
            return None
        # The dict lookup is keyed by a hash of the secret; the final check
        # is constant time all the same.
        return tenant if hmac.compare_digest(digest, tenant.key_hash) else None

    def names(self) -> frozenset[str]:
        """Every configured tenant's name (metric labels are limited to these)."""
        return self._names

    def close(self) -> None:
        self._stop.set()
