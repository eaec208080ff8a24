"""The audit log: append-only, hash-chained JSON Lines records of admin actions
and of every request's metadata. Knows files and hashes, not HTTP or Ray.

Public API (used by the tenant CLI, the ingress and releases)::

    log = AuditLog(path)                      # one per process
    log.admin(actor, action, before, after)   # e.g. ("cli:alice", "tenant.add",
                                              #       None, tenant.public())
    log.request(tenant=..., route=..., status=200, ...)
    log.close()                               # drains the queue (SIGTERM, exit)
    verify(path)  -> Verdict                  # first edited/inserted/deleted
    query(path, tenant=..., since=..., status=...) -> iterator of records

Each line is one record: `seq` (1, 2, ...), `time` (UTC, ISO 8601), `kind`
(`admin` or `request`), its fields, `prev` (the SHA-256 of the record before
it; 64 zeros for the first) and `hash` (the SHA-256 of this record's canonical
JSON without `hash`). Writers never block: records go to a queue that one
thread appends under an exclusive `flock`, so several processes (ingress
replicas, the CLI) extend one chain. A clean shutdown writes everything
queued; a crash loses at most the records still queued (tens of
milliseconds' worth), since each batch is fsync'ed. Deleting records from the
end cannot be told from a log that simply stopped there.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tenants.writer import BackgroundWriter

GENESIS = "0" * 64
_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")


class AuditError(Exception):
    """An audit log that cannot be read or a bad query; one line."""


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the record's canonical JSON, leaving out `hash` itself."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends records to one hash-chained JSON Lines file, off the caller's
    thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tail: tuple[int, int, str] | None = None  # (size, seq, hash)
        self._writer = BackgroundWriter(self._write, name="audit-writer")

    def admin(
        self,
        actor: str,
        action: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        **extra: Any,
    ) -> None:
        """An admin action: who (`actor`), what (`action`, e.g. `tenant.add`,
        `release.promote`), and the object before and after it."""
        self._writer.put(
            {
                "kind": "admin",
                "time": now_iso(),
                "actor": actor,
                "action": action,
                "before": before,
                "after": after,
                **extra,
            }
        )

    def request(self, **fields: Any) -> None:
        """One request's metadata (tenant, route, model, release, status,
        tokens, latency_ms, trace_id, ...)."""
        self._writer.put({"kind": "request", "time": now_iso(), **fields})

    def flush(self, timeout: float | None = 10.0) -> bool:
        return self._writer.flush(timeout)

    def close(self) -> None:
        self._writer.close()

    def _write(self, records: list[dict[str, Any]]) -> None:
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                size, seq, prev = self._last(f)
                lines = []
                for body in records:
                    seq += 1
                    record = {"seq": seq, **body, "prev": prev}
                    record["hash"] = prev = record_hash(record)
                    lines.append(canonical(record) + b"\n")
                data = b"".join(lines)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                self._tail = (size + len(data), seq, prev)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _last(self, f: Any) -> tuple[int, int, str]:
        size = os.fstat(f.fileno()).st_size
        if self._tail is not None and self._tail[0] == size:
            return self._tail
        if size == 0:
            return 0, 0, GENESIS
        line = _last_line(self.path, size)
        try:
            record = json.loads(line)
            return size, int(record["seq"]), str(record["hash"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(
                f"{self.path}: the last record is damaged; run `ragserve audit "
                "verify` and move the file aside"
            ) from None


def _last_line(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        step = 4096
        pos = size
        data = b""
        while pos > 0:
            pos = max(0, pos - step)
            f.seek(pos)
            data = f.read(size - pos)
            body = data.rstrip(b"\n")
            if b"\n" in body:
                return body.rsplit(b"\n", 1)[1]
        return data.rstrip(b"\n")


@dataclass(frozen=True)
class Verdict:
    """Result of `verify`: ok, the records checked, and the first problem."""

    ok: bool
    records: int
    problem: str | None = None
    line: int | None = None


def verify(path: str | Path) -> Verdict:
    """Check the chain; name the first edited, inserted or deleted record."""
    prev, expected, count = GENESIS, 1, 0
    for lineno, raw in enumerate(_read_lines(Path(path)), start=1):
        try:
            record = json.loads(raw)
            stored = record["hash"]
            seq = int(record["seq"])
        except (ValueError, KeyError, TypeError):
            problem = f"line {lineno} is not an audit record (edited by hand)"
            return Verdict(False, count, problem, lineno)
        if record_hash(record) != stored:
            problem = (
                f"record {seq} (line {lineno}) was edited: its hash does not "
                "match its content"
            )
            return Verdict(False, count, problem, lineno)
        if seq > expected:
            gone = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
            problem = f"record {gone} deleted: line {lineno} holds record {seq}"
            return Verdict(False, count, problem, lineno)
        if seq < expected:
            problem = (
                f"line {lineno} was inserted: it claims record {seq} after "
                f"record {expected - 1}"
            )
            return Verdict(False, count, problem, lineno)
        if record.get("prev") != prev:
            problem = (
                f"record {seq} (line {lineno}) does not follow record {seq - 1}: "
                f"one of them was rewritten or inserted"
            )
            return Verdict(False, count, problem, lineno)
        prev, expected, count = stored, seq + 1, count + 1
    return Verdict(True, count)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`2026-12-01T14:00:00Z`, `2026-12-01`, or relative `30s`, `15m`, `2h`, `1d`."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return now - timedelta(**{unit: int(m[1])})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AuditError(
            f"--since {text!r} is not a time (ISO 8601 such as 2026-12-01T14:00Z, "
            "or 30s, 15m, 2h, 1d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def query(
    path: str | Path,
    tenant: str | None = None,
    since: datetime | None = None,
    status: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Records matching every given filter, oldest first."""
    for raw in _read_lines(Path(path)):
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if tenant is not None and record.get("tenant") != tenant:
            continue
        if status is not None and record.get("status") != status:
            continue
        if since is not None:
            when = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
            if when < since:
                continue
        yield record


def _read_lines(path: Path) -> Iterator[bytes]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - a generator closes it below
    except FileNotFoundError:
        raise AuditError(f"no audit log at {path}") from None
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc.strerror}") from None
    with f:
        for line in f:
            if line.strip():
                yield line
