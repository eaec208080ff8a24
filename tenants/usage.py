"""Each tenant's daily token count, kept in the tenant database so that a
restarted ledger still knows how much of today's quota is used."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from tenants.records import TenantError
from tenants.store import open_engine

_meta = MetaData()
daily_usage_table = Table(
    "daily_usage",
    _meta,
    Column("scope", String(128), primary_key=True),  # one ledger's name
    Column("tenant", String(64), primary_key=True),
    Column("day", String(10), primary_key=True),  # UTC, YYYY-MM-DD
    Column("tokens", Integer, nullable=False),
)


class DailyUsage:
    """Daily token counts of one ledger (`scope`), by tenant and UTC day."""

    def __init__(self, url: str, scope: str) -> None:
        self.scope = scope
        self._engine = open_engine(url)
        try:
            _meta.create_all(self._engine)
        except SQLAlchemyError as exc:
            raise TenantError(f"cannot open tenant store {url}: {exc}") from None

    def load(self, day: str) -> dict[str, int]:
        """Tokens counted on `day`, by tenant."""
        t = daily_usage_table
        query = select(t.c.tenant, t.c.tokens).where(
            t.c.scope == self.scope, t.c.day == day
        )
        with self._engine.connect() as conn:
            return {row.tenant: int(row.tokens) for row in conn.execute(query)}

    def save(self, day: str, counts: dict[str, int]) -> None:
        """Write `day`'s counts (each row replaced), in one transaction."""
        t = daily_usage_table
        with self._engine.begin() as conn:
            for tenant, tokens in counts.items():
                key = (
                    (t.c.scope == self.scope)
                    & (t.c.tenant == tenant)
                    & (t.c.day == day)
                )
                done = conn.execute(update(t).where(key).values(tokens=tokens))
                if done.rowcount == 0:
                    conn.execute(
                        insert(t).values(
                            scope=self.scope, tenant=tenant, day=day, tokens=tokens
                        )
                    )

    def close(self) -> None:
        self._engine.dispose()
