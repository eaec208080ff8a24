"""`ragserve tenant ...` and `ragserve audit ...` end to end in-process: keys
printed once and stored hashed, every change audited, bad input one line with
exit 2 and nothing changed, hand edits of the audit log named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph.cli.main import main
from tenants.keys import key_matches
from tenants.store import TenantStore
from tests.unit.test_cli import assert_one_line_error


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("RAGSERVE_DATA_DIR", str(tmp_path / "data"))
    return {"db": tmp_path / "t.db", "audit": tmp_path / "audit.jsonl"}


def cli(capsys, env: dict[str, Path], *argv: str) -> tuple[int, str, str]:
    flags = ["--audit-log", str(env["audit"])]
    if argv[0] == "tenant":
        flags += ["--tenants-db", f"sqlite:///{env['db']}"]
    code = main([*argv, *flags])
    out, err = capsys.readouterr()
    return code, out, err


def _store(env: dict[str, Path]) -> TenantStore:
    return TenantStore(f"sqlite:///{env['db']}")


def test_add_prints_key_once_and_audits(capsys, env) -> None:
    argv = ["add", "acme", "--rpm", "60", "--tpm", "5000", "--weight", "2"]
    code, out, _ = cli(capsys, env, "tenant", *argv, "--releases", "a,b")
    assert code == 0
    key = out.strip()
    tenant = _store(env).get("acme")
    assert key_matches(key, tenant.key_hash)
    assert tenant.limits.rpm == 60 and tenant.releases == ("a", "b")
    code, out, _ = cli(capsys, env, "tenant", "list")
    assert code == 0 and "acme" in out and key not in out
    code, out, _ = cli(capsys, env, "tenant", "show", "acme")
    assert json.loads(out)["limits"]["tpm"] == 5000 and key not in out
    assert key not in env["audit"].read_text()
    code, out, _ = cli(capsys, env, "audit", "query")
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["action"] == "tenant.add" and record["after"]["name"] == "acme"


def test_update_rotate_revoke_are_audited(capsys, env) -> None:
    _, old, _ = cli(capsys, env, "tenant", "add", "acme", "--rpm", "5")
    assert cli(capsys, env, "tenant", "update", "acme", "--rpm", "9")[0] == 0
    code, new, _ = cli(capsys, env, "tenant", "rotate-key", "acme")
    assert code == 0 and new != old
    assert key_matches(new.strip(), _store(env).get("acme").key_hash)
    assert cli(capsys, env, "tenant", "revoke", "acme")[0] == 0
    assert _store(env).get("acme").revoked
    _, out, _ = cli(capsys, env, "audit", "query")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["action"] for r in records] == [
        "tenant.add",
        "tenant.update",
        "tenant.rotate_key",
        "tenant.revoke",
    ]
    assert records[1]["before"]["limits"]["rpm"] == 5
    assert records[1]["after"]["limits"]["rpm"] == 9
    code, out, _ = cli(capsys, env, "audit", "verify")
    assert code == 0 and "4 records, chain intact" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("tenant", "add", "acme"), "already exists"),
        (("tenant", "add", "beta", "--rpm", "0"), "--rpm must be a positive"),
        (("tenant", "add", "beta", "--tpm", "-5"), "--tpm must be a positive"),
        (("tenant", "add", "beta", "--max-concurrency", "x"), "--max-concurrency"),
        (("tenant", "add", "beta", "--weight", "0"), "--weight"),
        (("tenant", "add", "beta", "--releases", ","), "--releases"),
        (("tenant", "add", "bad/name"), "tenant name"),
        (("tenant", "update", "ghost", "--rpm", "3"), "no tenant named 'ghost'"),
        (("tenant", "update", "acme"), "give at least one"),
        (("tenant", "update", "acme", "--daily-tokens", "0"), "--daily-tokens"),
        (("tenant", "revoke", "ghost"), "no tenant named 'ghost'"),
        (("tenant", "rotate-key", "ghost"), "no tenant named 'ghost'"),
        (("audit", "query", "--status", "teapot"), "--status"),
        (("audit", "query", "--since", "soon"), "--since"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(capsys, env, argv, needle) -> None:
    cli(capsys, env, "tenant", "add", "acme", "--rpm", "5")
    before = env["audit"].read_bytes()
    version = _store(env).version()
    code, out, err = cli(capsys, env, *argv)
    assert_one_line_error(code, err, needle)
    assert out == ""
    assert env["audit"].read_bytes() == before
    assert _store(env).version() == version
    assert [t.name for t in _store(env).tenants()] == ["acme"]
    assert _store(env).get("acme").limits.rpm == 5


def test_verify_names_edited_and_deleted_records(capsys, env) -> None:
    for name in ("a", "b", "c", "d"):
        cli(capsys, env, "tenant", "add", name)
    lines = env["audit"].read_text().splitlines()
    edited = list(lines)
    edited[1] = edited[1].replace('"name":"b"', '"name":"x"')
    env["audit"].write_text("\n".join(edited) + "\n")
    code, _, err = cli(capsys, env, "audit", "verify")
    assert_one_line_error(code, err, "record 2 (line 2) was edited")
    env["audit"].write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    code, _, err = cli(capsys, env, "audit", "verify")
    assert_one_line_error(code, err, "record 3 deleted")


def test_audit_without_a_log(capsys, env) -> None:
    code, _, err = cli(capsys, env, "audit", "verify")
    assert_one_line_error(code, err, "no audit log")


def test_serve_takes_the_store_flags() -> None:
    from graph.cli.args import load_args
    from graph.cli.main import build_parser

    ns = build_parser().parse_args(
        ["serve", "--tenants-db", "sqlite:///x.db", "--audit-log", "/tmp/a.jsonl"]
    )
    args = load_args(ns)
    assert args.tenants.db == "sqlite:///x.db"
    assert args.tenants.audit_log == "/tmp/a.jsonl"


def test_config_show_never_prints_keys(capsys) -> None:
    code = main(["config", "show", "--set", "server.api_keys=[sekrit-key-1]"])
    out, _ = capsys.readouterr()
    assert code == 0 and "sekrit-key-1" not in out and "<redacted>" in out
