"""Each tenant's daily token count and its last window of request and token
times, kept in the tenant database so that a restarted ledger still knows how
much of today's quota and of this minute's limits is used."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from tenants.limits import Window
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
rate_window_table = Table(
    "rate_window",
    _meta,
    Column("scope", String(128), primary_key=True),
    Column("tenant", String(64), primary_key=True),
    # JSON: {"requests": [unix time, ...], "tokens": [[unix time, n], ...]}
    Column("window", Text, nullable=False),
)


def compact(window: Window) -> Window:
    """A window as it is stored: request times to the millisecond, token
    charges summed by second (stamped with the second's last charge, so none
    expires early)."""
    requests, charges = window
    buckets: dict[int, list[float]] = {}
    for when, n in charges:
        bucket = buckets.setdefault(int(when), [when, 0])
        bucket[0] = when
        bucket[1] += n
    return (
        [round(t, 3) for t in requests],
        [(round(t, 3), int(n)) for t, n in buckets.values()],
    )


class DailyUsage:
    """One ledger's (`scope`) daily token counts, by tenant and UTC day, and
    its tenants' rate windows."""

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

    def load_windows(self) -> dict[str, Window]:
        """The windows last saved, by tenant (possibly minutes old)."""
        t = rate_window_table
        query = select(t.c.tenant, t.c.window).where(t.c.scope == self.scope)
        with self._engine.connect() as conn:
            rows = list(conn.execute(query))
        out: dict[str, Window] = {}
        for row in rows:
            data = json.loads(row.window)
            out[row.tenant] = (
                [float(x) for x in data["requests"]],
                [(float(w), int(n)) for w, n in data["tokens"]],
            )
        return out

    def save(
        self,
        day: str,
        counts: dict[str, int],
        windows: dict[str, Window] | None = None,
    ) -> None:
        """Write `day`'s counts (each row replaced) and, given `windows`, make
        them (`compact`ed) the scope's windows (a tenant not in them has
        none), in one transaction."""
        with self._engine.begin() as conn:
            for tenant, tokens in counts.items():
                _upsert(
                    conn,
                    daily_usage_table,
                    {"scope": self.scope, "tenant": tenant, "day": day},
                    {"tokens": tokens},
                )
            if windows is not None:
                t = rate_window_table
                conn.execute(
                    delete(t).where(
                        t.c.scope == self.scope, t.c.tenant.not_in(list(windows))
                    )
                )
            for tenant, raw in (windows or {}).items():
                requests, charges = compact(raw)
                window = json.dumps({"requests": requests, "tokens": charges})
                _upsert(
                    conn,
                    rate_window_table,
                    {"scope": self.scope, "tenant": tenant},
                    {"window": window},
                )

    def close(self) -> None:
        self._engine.dispose()


def _upsert(conn: Any, table: Table, key: dict[str, str], values: dict) -> None:
    """Update the row with primary key `key`, or insert it (any SQL dialect)."""
    where = [table.c[name] == value for name, value in key.items()]
    done = conn.execute(update(table).where(*where).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(table).values(**key, **values))
