"""`ragserve tenant ...` and `ragserve audit ...`: tenant and key administration
over the tenant store, each change written to the audit log; audit checks and
queries. Registered by one call from `graph.cli.main.build_parser`."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from tenants.audit import AuditError, AuditLog, parse_since, query, verify
from tenants.config import resolve_audit_path, resolve_db_url
from tenants.records import Limits, TenantError, check_weight, parse_releases
from tenants.store import TenantStore

_LIMIT_FLAGS = {
    "rpm": "requests per minute",
    "tpm": "tokens per minute (prompt with retrieved context + completion)",
    "max_concurrency": "requests running at once",
    "daily_tokens": "tokens per UTC day",
}


def _one_line_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    @functools.wraps(fn)
    def run(ns: argparse.Namespace) -> int:
        try:
            return fn(ns)
        except (TenantError, AuditError) as exc:
            print(f"ragserve: error: {exc}", file=sys.stderr)
            return 2

    return run


def _positive_int(flag: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TenantError(f"--{flag} must be a whole number, got {text!r}") from None
    if value <= 0:
        raise TenantError(f"--{flag} must be a positive number, got {value}")
    return value


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TenantError(f"--weight must be a number, got {text!r}") from None
    check_weight(value)
    return value


def _settings(ns: argparse.Namespace) -> dict[str, Any]:
    """The limit/weight/releases flags that were given, parsed and checked."""
    out: dict[str, Any] = {}
    for name in _LIMIT_FLAGS:
        raw = getattr(ns, name)
        if raw is not None:
            out[name] = _positive_int(name.replace("_", "-"), raw)
    if ns.weight is not None:
        out["weight"] = _weight(ns.weight)
    if ns.releases is not None:
        out["releases"] = parse_releases(ns.releases)
    return out


def _config_tenants(ns: argparse.Namespace) -> Any:
    if not getattr(ns, "config", None):
        return None
    from graph.config import ConfigError, RagServingArgs

    try:
        return RagServingArgs.load(ns.config).tenants
    except ConfigError as exc:
        raise TenantError(str(exc)) from None


def _store(ns: argparse.Namespace) -> TenantStore:
    cfg = _config_tenants(ns)
    return TenantStore(resolve_db_url(ns.tenants_db or (cfg.db if cfg else None)))


def _audit_path(ns: argparse.Namespace) -> Any:
    cfg = _config_tenants(ns)
    return resolve_audit_path(ns.audit_log or (cfg.audit_log if cfg else None))


def _audited(ns: argparse.Namespace, action: str, before: Any, after: Any) -> None:
    log = AuditLog(_audit_path(ns))
    try:
        log.admin(
            f"cli:{getpass.getuser()}",
            action,
            before.public() if before else None,
            after.public() if after else None,
        )
    finally:
        log.close()


@_one_line_errors
def cmd_add(ns: argparse.Namespace) -> int:
    settings = _settings(ns)
    limits = Limits(**{k: settings.pop(k) for k in list(settings) if k in _LIMIT_FLAGS})
    tenant, key = _store(ns).add(ns.name, limits, **settings)
    _audited(ns, "tenant.add", None, tenant)
    print(f"tenant {tenant.name!r} added; its key (shown once):", file=sys.stderr)
    print(key)
    return 0


@_one_line_errors
def cmd_update(ns: argparse.Namespace) -> int:
    settings = _settings(ns)
    if not settings:
        raise TenantError(
            "tenant update: give at least one of --rpm, --tpm, "
            "--max-concurrency, --daily-tokens, --weight, --releases"
        )
    before, after = _store(ns).update(ns.name, **settings)
    _audited(ns, "tenant.update", before, after)
    print(json.dumps(after.public(), indent=2))
    return 0


@_one_line_errors
def cmd_rotate(ns: argparse.Namespace) -> int:
    before, after, key = _store(ns).rotate_key(ns.name)
    _audited(ns, "tenant.rotate_key", before, after)
    print(
        f"tenant {ns.name!r}: new key (shown once; the old one no longer works):",
        file=sys.stderr,
    )
    print(key)
    return 0


@_one_line_errors
def cmd_revoke(ns: argparse.Namespace) -> int:
    before, after = _store(ns).revoke(ns.name)
    _audited(ns, "tenant.revoke", before, after)
    print(f"tenant {ns.name!r} revoked", file=sys.stderr)
    return 0


@_one_line_errors
def cmd_list(ns: argparse.Namespace) -> int:
    rows: list[tuple[str, ...]] = [
        ("NAME", "RPM", "TPM", "CONC", "DAILY", "WEIGHT", "RELEASES", "KEY")
    ]
    for t in _store(ns).tenants():
        lim = t.limits
        rows.append(
            (
                t.name + (" (revoked)" if t.revoked else ""),
                *(
                    str(v) if v is not None else "-"
                    for v in (lim.rpm, lim.tpm, lim.max_concurrency, lim.daily_tokens)
                ),
                f"{t.weight:g}",
                ",".join(t.releases) if t.releases is not None else "*",
                t.key_hint,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


@_one_line_errors
def cmd_show(ns: argparse.Namespace) -> int:
    print(json.dumps(_store(ns).get(ns.name).public(), indent=2))
    return 0


@_one_line_errors
def cmd_verify(ns: argparse.Namespace) -> int:
    path = _audit_path(ns)
    verdict = verify(path)
    if not verdict.ok:
        raise AuditError(f"audit log {path}: {verdict.problem}")
    print(f"audit log {path}: {verdict.records} records, chain intact")
    return 0


@_one_line_errors
def cmd_query(ns: argparse.Namespace) -> int:
    status = None
    if ns.status is not None:
        try:
            status = int(ns.status)
        except ValueError:
            raise AuditError(
                f"--status must be an HTTP status code, got {ns.status!r}"
            ) from None
    since = parse_since(ns.since) if ns.since else None
    for record in query(_audit_path(ns), ns.tenant, since, status):
        print(json.dumps(record, sort_keys=True))
    return 0


def add_store_flags(p: argparse.ArgumentParser, audit_only: bool = False) -> None:
    """`--tenants-db` and `--audit-log` (also on `ragserve serve`)."""
    if not audit_only:
        p.add_argument(
            "--tenants-db",
            metavar="URL",
            help="tenant store SQLAlchemy URL (default $RAGSERVE_TENANTS_DB, "
            "else SQLite under the user data dir)",
        )
    p.add_argument(
        "--audit-log",
        metavar="PATH",
        help="audit log file (default $RAGSERVE_AUDIT_LOG, else "
        "audit.jsonl under the user data dir)",
    )


def _common(p: argparse.ArgumentParser, audit_only: bool = False) -> None:
    add_store_flags(p, audit_only)
    p.add_argument("--config", help="YAML config file (its `tenants` section)")


def _settings_flags(p: argparse.ArgumentParser) -> None:
    for name, what in _LIMIT_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", metavar="N", help=what)
    p.add_argument("--weight", metavar="W", help="fair-share weight (default 1)")
    p.add_argument(
        "--releases", metavar="A,B", help="releases this tenant may use (default all)"
    )


def register(sub: Any) -> None:
    """Add `tenant` and `audit` to the CLI, and the store flags to `serve`."""
    tenant = sub.add_parser("tenant", help="tenants and their API keys")
    ts = tenant.add_subparsers(dest="tenant_command", required=True)
    add = ts.add_parser("add", help="create a tenant; prints its key once")
    add.add_argument("name")
    _settings_flags(add)
    _common(add)
    add.set_defaults(func=cmd_add)
    upd = ts.add_parser("update", help="change a tenant's limits, weight, releases")
    upd.add_argument("name")
    _settings_flags(upd)
    _common(upd)
    upd.set_defaults(func=cmd_update)
    for name, fn, what in (
        ("show", cmd_show, "one tenant's settings"),
        ("rotate-key", cmd_rotate, "replace a tenant's key; prints the new one"),
        ("revoke", cmd_revoke, "revoke a tenant's key on every replica"),
    ):
        p = ts.add_parser(name, help=what)
        p.add_argument("name")
        _common(p)
        p.set_defaults(func=fn)
    lst = ts.add_parser("list", help="all tenants")
    _common(lst)
    lst.set_defaults(func=cmd_list)

    audit = sub.add_parser("audit", help="the hash-chained audit log")
    aus = audit.add_subparsers(dest="audit_command", required=True)
    ver = aus.add_parser("verify", help="check the chain; name the first bad record")
    _common(ver, audit_only=True)
    ver.set_defaults(func=cmd_verify)
    qry = aus.add_parser("query", help="matching records as JSON Lines")
    qry.add_argument("--tenant")
    qry.add_argument("--since", help="ISO time or 30s / 15m / 2h / 1d ago")
    qry.add_argument("--status", help="HTTP status code")
    _common(qry, audit_only=True)
    qry.set_defaults(func=cmd_query)
    serve = sub.choices.get("serve")
    if serve is not None:
        add_store_flags(serve)
