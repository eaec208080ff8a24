"""The tenant store: tenants, completions and feedback in a SQL database
(SQLite by default, any SQLAlchemy URL such as PostgreSQL). Knows nothing of
HTTP or Ray; every change bumps one version number that readers poll."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.types import TypeDecorator

from tenants.keys import hash_key, hint, new_key
from tenants.records import Limits, Tenant, TenantError, check_name

#: Marks a value stored JSON-encoded by `NulSafeText`.
_ENCODED = "\x1bjson:"


class NulSafeText(TypeDecorator[str]):
    """Client text that may hold NUL (valid UTF-8, a real token), which
    PostgreSQL's text cannot: such a value (or one that starts with the
    marker) is stored as the marker and its JSON, every other value as it is,
    so rows written before stay readable and every value round-trips."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and ("\x00" in value or value.startswith(_ENCODED)):
            return _ENCODED + json.dumps(value)
        return value

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is not None and value.startswith(_ENCODED):
            decoded: str = json.loads(value.removeprefix(_ENCODED))
            return decoded
        return value


_meta = MetaData()
tenants_table = Table(
    "tenants",
    _meta,
    Column("name", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_hint", String(16), nullable=False),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("max_concurrency", Integer),
    Column("daily_tokens", Integer),
    Column("weight", Float, nullable=False),
    Column("releases", Text),
    Column("revoked", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
completions_table = Table(
    "completions",
    _meta,
    Column("id", String(80), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("release", String(128)),
    Column("trace_id", String(32)),
    Column("created_at", Float, nullable=False),
)
feedback_table = Table(
    "feedback",
    _meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("completion_id", String(80), nullable=False, index=True),
    Column("tenant", String(64), nullable=False),
    Column("release", String(128)),
    Column("trace_id", String(32)),
    Column("rating", Integer, nullable=False),
    Column("comment", NulSafeText),
    Column("created_at", Float, nullable=False),
)
version_table = Table(
    "store_version",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)


@dataclass(frozen=True)
class Completion:
    """Who made a completion, and where it was answered."""

    id: str
    tenant: str
    release: str | None
    trace_id: str | None


def open_engine(url: str) -> Engine:
    """An engine for the tenant database at `url` (SQLite: WAL, shared by
    every process that opens the file)."""
    try:
        parsed = make_url(url)
    except Exception:
        raise TenantError(f"--tenants-db {url!r} is not a database URL") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            # Several ingress replicas and the CLI share the file.
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

    return engine


class TenantStore:
    """Tenants and their hashed keys, plus completion owners and feedback."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = open_engine(url)
        try:
            _meta.create_all(self._engine)
            with self._engine.begin() as conn:
                if conn.execute(select(version_table.c.id)).first() is None:
                    conn.execute(insert(version_table).values(id=1, version=0))
        except IntegrityError:
            pass  # another process created the row first
        except SQLAlchemyError as exc:
            raise TenantError(f"cannot open tenant store {url}: {exc}") from None

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _change(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn
            conn.execute(
                update(version_table).values(version=version_table.c.version + 1)
            )

    def version(self) -> int:
        """A number that changes whenever a tenant or key changes."""
        with self._engine.connect() as conn:
            return int(conn.execute(select(version_table.c.version)).scalar_one())

    # tenants -------------------------------------------------------------
    def add(
        self,
        name: str,
        limits: Limits,
        weight: float = 1.0,
        releases: tuple[str, ...] | None = None,
    ) -> tuple[Tenant, str]:
        """Create a tenant; returns it and its key (shown once, never stored)."""
        key = new_key()
        now = time.time()
        tenant = Tenant(
            name, hash_key(key), hint(key), limits, float(weight), releases,
            created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            with self._change() as conn:
                if self._row(conn, name) is not None:
                    raise TenantError(f"tenant {name!r} already exists")
                conn.execute(insert(tenants_table).values(**_to_row(tenant)))
        except IntegrityError:
            raise TenantError(f"tenant {name!r} already exists") from None
        return tenant, key

    def get(self, name: str) -> Tenant:
        check_name(name)
        with self._engine.connect() as conn:
            row = self._row(conn, name)
        if row is None:
            raise TenantError(f"no tenant named {name!r}")
        return row

    def tenants(self) -> list[Tenant]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(tenants_table).order_by(tenants_table.c.name))
            return [_from_row(r._mapping) for r in rows]

    def update(self, name: str, **changes: Any) -> tuple[Tenant, Tenant]:
        """Change limits (`rpm`, ...), `weight` or `releases`; returns
        (before, after). Validation happens before anything is written."""
        with self._change() as conn:
            before = self._existing(conn, name)
            limit_changes = {
                k: changes.pop(k) for k in list(changes) if k in Limits.__annotations__
            }
            limits = Limits(**{**before.limits.__dict__, **limit_changes})
            after = before.updated(limits=limits, updated_at=time.time(), **changes)
            conn.execute(
                update(tenants_table)
                .where(tenants_table.c.name == name)
                .values(**_to_row(after))
            )
        return before, after

    def rotate_key(self, name: str) -> tuple[Tenant, Tenant, str]:
        """A new key for `name`; the old one stops working. Returns
        (before, after, key)."""
        key = new_key()
        with self._change() as conn:
            before = self._existing(conn, name)
            after = before.updated(
                key_hash=hash_key(key), key_hint=hint(key), updated_at=time.time()
            )
            conn.execute(
                update(tenants_table)
                .where(tenants_table.c.name == name)
                .values(**_to_row(after))
            )
        return before, after, key

    def revoke(self, name: str) -> tuple[Tenant, Tenant]:
        """Revoke the tenant's key (the record stays, for the audit trail)."""
        with self._change() as conn:
            before = self._existing(conn, name)
            if before.revoked:
                raise TenantError(f"tenant {name!r} is already revoked")
            after = before.updated(revoked=True, updated_at=time.time())
            conn.execute(
                update(tenants_table)
                .where(tenants_table.c.name == name)
                .values(revoked=1, updated_at=after.updated_at)
            )
        return before, after

    def _row(self, conn: Connection, name: str) -> Tenant | None:
        row = conn.execute(
            select(tenants_table).where(tenants_table.c.name == name)
        ).first()
        return _from_row(row._mapping) if row is not None else None

    def _existing(self, conn: Connection, name: str) -> Tenant:
        check_name(name)
        tenant = self._row(conn, name)
        if tenant is None:
            raise TenantError(f"no tenant named {name!r}")
        return tenant

    # completions and feedback ---------------------------------------------
    def record_completions(self, items: list[Completion]) -> None:
        """Remember who made each completion (batched, off the request path)."""
        if not items:
            return
        now = time.time()
        with self._engine.begin() as conn:
            conn.execute(
                insert(completions_table),
                [{**c.__dict__, "created_at": now} for c in items],
            )

    def completion(self, completion_id: str) -> Completion | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(completions_table).where(completions_table.c.id == completion_id)
            ).first()
        if row is None:
            return None
        m = row._mapping
        return Completion(m["id"], m["tenant"], m["release"], m["trace_id"])

    def add_feedback(
        self, completion: Completion, rating: int, comment: str | None
    ) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(feedback_table).values(
                    completion_id=completion.id,
                    tenant=completion.tenant,
                    release=completion.release,
                    trace_id=completion.trace_id,
                    rating=rating,
                    comment=comment,
                    created_at=time.time(),
                )
            )

    def feedback_comments(self, completion_id: str) -> list[str | None]:
        """The comments left on a completion, oldest first."""
        query = (
            select(feedback_table.c.comment)
            .where(feedback_table.c.completion_id == completion_id)
            .order_by(feedback_table.c.seq)
        )
        with self._engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def feedback_counts(self, release: str | None = None) -> dict[int, int]:
        """Ratings counted (for a release, or all): {1: n, -1: m}."""
        query = select(feedback_table.c.rating, func.count()).group_by(
            feedback_table.c.rating
        )
        if release is not None:
            query = query.where(feedback_table.c.release == release)
        with self._engine.connect() as conn:
            return {int(r): int(n) for r, n in conn.execute(query)}


def _to_row(t: Tenant) -> dict[str, Any]:
    return {
        "name": t.name,
        "key_hash": t.key_hash,
        "key_hint": t.key_hint,
        **t.limits.__dict__,
        "weight": t.weight,
        "releases": json.dumps(list(t.releases)) if t.releases is not None else None,
        "revoked": int(t.revoked),
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def _from_row(m: Any) -> Tenant:
    releases = json.loads(m["releases"]) if m["releases"] else None
    return Tenant(
        name=m["name"],
        key_hash=m["key_hash"],
        key_hint=m["key_hint"],
        limits=Limits(m["rpm"], m["tpm"], m["max_concurrency"], m["daily_tokens"]),
        weight=float(m["weight"]),
        releases=tuple(releases) if releases is not None else None,
        revoked=bool(m["revoked"]),
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
    )
