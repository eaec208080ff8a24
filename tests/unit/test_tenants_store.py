"""The tenant store over a real SQLite file: keys hashed, limits validated,
nothing changed by a refused operation, feedback joined to its completion."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenants.keys import hash_key, key_matches
from tenants.records import Limits, TenantError, parse_releases
from tenants.store import Completion, TenantStore


@pytest.fixture
def store(tmp_path: Path) -> TenantStore:
    s = TenantStore(f"sqlite:///{tmp_path / 'tenants.db'}")
    yield s
    s.close()


def test_add_keeps_only_a_hash(store: TenantStore, tmp_path: Path) -> None:
    tenant, key = store.add("acme", Limits(rpm=60, tpm=1000), weight=2.0)
    assert key.startswith("rs-") and len(key) > 40
    assert tenant.key_hash == hash_key(key) and key_matches(key, tenant.key_hash)
    assert not key_matches(key + "x", tenant.key_hash)
    raw = (tmp_path / "tenants.db").read_bytes()
    assert key.encode() not in raw
    got = store.get("acme")
    assert got.limits == Limits(rpm=60, tpm=1000) and got.weight == 2.0
    assert "key_hash" not in got.public()


def test_duplicate_and_bad_limits_change_nothing(store: TenantStore) -> None:
    store.add("acme", Limits(rpm=5))
    version = store.version()
    with pytest.raises(TenantError, match="already exists"):
        store.add("acme", Limits(rpm=9))
    with pytest.raises(TenantError, match="--rpm must be a positive"):
        Limits(rpm=0)
    with pytest.raises(TenantError, match="--tpm must be a positive"):
        Limits(tpm=-3)
    with pytest.raises(TenantError, match="--max-concurrency"):
        store.update("acme", max_concurrency=0)
    with pytest.raises(TenantError, match="--weight"):
        store.update("acme", weight=-1.0)
    with pytest.raises(TenantError, match="tenant name"):
        store.add("bad name!", Limits())
    assert store.version() == version
    assert store.get("acme").limits == Limits(rpm=5)


def test_update_rotate_revoke(store: TenantStore) -> None:
    _, old_key = store.add("acme", Limits(rpm=5))
    v0 = store.version()
    before, after = store.update("acme", rpm=10, releases=parse_releases("a,b"))
    assert before.limits.rpm == 5 and after.limits.rpm == 10
    assert store.get("acme").releases == ("a", "b")
    _, rotated, new_key = store.rotate_key("acme")
    assert new_key != old_key and key_matches(new_key, rotated.key_hash)
    assert not key_matches(old_key, store.get("acme").key_hash)
    store.revoke("acme")
    assert store.get("acme").revoked
    assert store.version() == v0 + 3
    with pytest.raises(TenantError, match="already revoked"):
        store.revoke("acme")
    for op in (store.revoke, store.rotate_key, store.get):
        with pytest.raises(TenantError, match="no tenant named 'ghost'"):
            op("ghost")
    with pytest.raises(TenantError, match="no tenant named"):
        store.update("ghost", rpm=3)


def test_store_shared_between_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = TenantStore(url), TenantStore(url)
    a.add("one", Limits())
    assert [t.name for t in b.tenants()] == ["one"]
    assert a.version() == b.version()


def test_feedback_joined_to_completion(store: TenantStore) -> None:
    store.record_completions([Completion("chatcmpl-1", "acme", "r1", "ab" * 16)])
    done = store.completion("chatcmpl-1")
    assert done == Completion("chatcmpl-1", "acme", "r1", "ab" * 16)
    assert store.completion("chatcmpl-nope") is None
    store.add_feedback(done, -1, "wrong")
    store.add_feedback(done, 1, None)
    store.add_feedback(done, -1, None)
    assert store.feedback_counts("r1") == {-1: 2, 1: 1}
    assert store.feedback_counts("other") == {}


def test_bad_url_is_one_line() -> None:
    with pytest.raises(TenantError, match="not a database URL"):
        TenantStore("not a url")


def test_releases_parsing() -> None:
    assert parse_releases("a, b") == ("a", "b")
    assert parse_releases(None) is None
    with pytest.raises(TenantError, match="--releases"):
        parse_releases("a,,b")


def test_comments_with_nul_are_stored_without_it_and_read_back(
    store: TenantStore, tmp_path: Path
) -> None:
    import sqlite3

    store.record_completions([Completion("cmpl-nul", "acme", None, None)])
    done = store.completion("cmpl-nul")
    assert done is not None
    marker_like = "\x1bjson:not encoded by the client"
    for comment in ("a\x00b", marker_like, "plain", None):
        store.add_feedback(done, 1, comment)
    assert store.feedback_comments("cmpl-nul") == ["a\x00b", marker_like, "plain", None]
    with sqlite3.connect(tmp_path / "tenants.db") as raw:
        stored = [row[0] for row in raw.execute("SELECT comment FROM feedback")]
    # PostgreSQL's text cannot hold NUL: nothing stored holds one; rows written
    # before (plain text) are read as they are.
    assert not any("\x00" in (s or "") for s in stored)
    assert stored[2:] == ["plain", None]
