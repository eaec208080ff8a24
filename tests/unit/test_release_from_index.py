"""`ragserve release create NEW --from OLD --index NEWIDX`: a documents change
becomes a release that differs from its parent in the index alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from releases.manifest import diff
from releases.registry import Registry
from retrieval.index import build_index
from retrieval.update import DocumentChanges, update_index
from tests.unit.test_cli import assert_one_line_error, run_cli


@pytest.fixture
def versions(tmp_path, tiny_docs, default_embedder) -> tuple[Path, Path]:
    old = tmp_path / "idx"
    build_index(tiny_docs, old, default_embedder, progress=False)
    _, new = update_index(
        old, DocumentChanges(deletes=["weather.txt"]), default_embedder
    )
    return old, new


def test_release_from_inherits_everything_but_the_index(
    tmp_path, versions, tiny_llama, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("RAGSERVE_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    old, new = versions
    reg = str(tmp_path / "reg")
    code, _, err = run_cli(
        capsys,
        "release",
        "create",
        "A",
        "--index",
        str(old),
        "--generator",
        str(tiny_llama),
        "--registry",
        reg,
        "--set",
        "retrieval.mode=hybrid",
    )
    assert code == 0, err

    code, out, err = run_cli(
        capsys,
        "release",
        "create",
        "B",
        "--from",
        "A",
        "--index",
        str(new),
        "--registry",
        reg,
    )

    assert code == 0, err
    assert "(from A)" in out
    a, b = Registry(reg).get("A"), Registry(reg).get("B")
    assert b.parent == "A"
    assert {line.split(":")[0] for line in diff(a, b)} == {"index"}
    assert b.artifacts["config"].details["retrieval"]["mode"] == "hybrid"
    assert "weather.txt" not in b.artifacts["index"].details["documents"]


def test_release_from_refuses_flags_it_would_ignore(tmp_path, versions, capsys) -> None:
    _, new = versions
    code, _, err = run_cli(
        capsys,
        "release",
        "create",
        "B",
        "--from",
        "A",
        "--index",
        str(new),
        "--registry",
        str(tmp_path / "reg"),
        "--generator",
        "x",
    )
    assert_one_line_error(code, err, "--generator")
    code, _, err = run_cli(
        capsys,
        "release",
        "create",
        "B",
        "--from",
        "A",
        "--index",
        str(new),
        "--registry",
        str(tmp_path / "reg"),
    )
    assert_one_line_error(code, err, "A")
