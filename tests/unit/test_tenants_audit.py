"""The hash-chained audit log: several writers extend one chain; verify names
the first edited, inserted or deleted record; query filters; close() drains."""

from __future__ import annotations

import itertools
import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tenants.audit import AuditError, AuditLog, parse_since, query, verify


def _fill(path: Path, n: int = 6) -> None:
    log = AuditLog(path)
    log.admin("cli:test", "tenant.add", None, {"name": "acme"})
    for i in range(n - 1):
        log.request(tenant="acme" if i % 2 else "beta", status=200 if i else 429)
    log.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_chain_verifies_and_links(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path)
    records = [json.loads(line) for line in _lines(path)]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    assert records[0]["actor"] == "cli:test" and records[0]["after"] == {"name": "acme"}
    assert verify(path).ok and verify(path).records == 6


def test_edited_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path)
    lines = _lines(path)
    lines[2] = lines[2].replace('"status":200', '"status":201')
    path.write_text("\n".join(lines) + "\n")
    verdict = verify(path)
    assert not verdict.ok and verdict.line == 3
    assert "record 3 (line 3) was edited" in str(verdict.problem)


def test_deleted_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path)
    lines = _lines(path)
    del lines[3]
    path.write_text("\n".join(lines) + "\n")
    verdict = verify(path)
    assert not verdict.ok
    assert verdict.problem == "record 4 deleted: line 4 holds record 5"


def test_inserted_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path)
    lines = _lines(path)
    lines.insert(2, lines[1])  # a copy: its own hash is valid
    path.write_text("\n".join(lines) + "\n")
    verdict = verify(path)
    assert not verdict.ok and verdict.line == 3
    assert "line 3 was inserted" in str(verdict.problem)


def test_garbage_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path)
    with path.open("a") as f:
        f.write("hello\n")
    verdict = verify(path)
    assert not verdict.ok and "line 7 is not an audit record" in str(verdict.problem)


def _writer(path: str, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.request(tenant="p", i=i)
    log.close()


def test_several_processes_extend_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), 50)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    verdict = verify(path)
    assert verdict.ok, verdict.problem
    assert verdict.records == 150


def test_query_filters(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 6)
    assert [r["seq"] for r in query(path, tenant="acme")] == [3, 5]
    assert [r["seq"] for r in query(path, status=429)] == [2]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list(query(path, since=future)) == []
    assert len(list(query(path, since=parse_since("1h")))) == 6


def test_parse_since() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_since("15m", now) == now - timedelta(minutes=15)
    assert parse_since("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(AuditError, match="--since 'yesterday'"):
        parse_since("yesterday")


def test_missing_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit log"):
        verify(tmp_path / "nope.jsonl")


def test_request_path_does_not_wait_for_disk(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(2000):
        log.request(tenant="t", i=i)  # returns at once: queued
    assert log.flush(30)
    log.close()
    assert verify(tmp_path / "audit.jsonl").records == 2000


def test_nul_in_a_field_is_written_escaped_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.admin("cli:test", "tenant.add", None, {"note": "a\x00b"})
    log.request(tenant="acme", status=200, request_id="r\x00")
    log.close()
    raw = path.read_bytes()
    assert b"\x00" not in raw and raw.count(b"\\u0000") == 2
    assert verify(path).ok
    records = list(query(path))
    assert records[0]["after"] == {"note": "a\x00b"}
    assert records[1]["request_id"] == "r\x00"
