"""`ragserve index update`: a new version from the changed documents, one line
and a non-zero exit on bad input, the old version left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.index import build_index
from retrieval.manifest import read_manifest
from tests.factories_retrieval import write_tree
from tests.unit.conftest import TINY_DOCS
from tests.unit.test_cli import assert_one_line_error, run_cli


@pytest.fixture
def old(tmp_path, tiny_docs, default_embedder) -> Path:
    out = tmp_path / "idx"
    build_index(tiny_docs, out, default_embedder, progress=False)
    return out


def test_index_update_writes_a_new_version_beside_the_old(
    tmp_path, old, capsys
) -> None:
    files = {**TINY_DOCS, "cooking.md": "# Pancakes\n\nUse buttermilk.\n"}
    del files["weather.txt"]
    docs = write_tree(tmp_path / "docs", {**files, "x.md": "# X\n\nx\n"})
    before = (old / "manifest.json").read_bytes()

    code, out, err = run_cli(
        capsys,
        "index",
        "update",
        "--index",
        str(old),
        "--docs",
        str(docs),
        "--partial",
        "--delete",
        "weather.txt",
        "-q",
    )

    assert code == 0, err
    assert "1 added, 1 replaced, 1 removed" in out
    new = next(p for p in tmp_path.iterdir() if p.name.startswith("idx-v"))
    manifest = read_manifest(new)
    assert manifest.changes.chunks_embedded == 2  # cooking.md and x.md
    assert manifest.parent.path == str(old)
    assert (old / "manifest.json").read_bytes() == before
    code, out, _ = run_cli(
        capsys,
        "index",
        "update",
        "--index",
        str(new),
        "--docs",
        str(docs),
        "-q",
        "--partial",
    )
    assert code == 0 and "nothing to update" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "--docs DIR and/or --delete"),
        (["--delete", "nope.md"], "no such document"),
        (["--partial", "--delete", "weather.txt"], "--partial"),
        (["--docs", "/nonexistent-docs"], "does not exist"),
    ],
    ids=["nothing", "unknown-doc", "partial-alone", "missing-docs"],
)
def test_index_update_refuses_bad_input_in_one_line(old, capsys, argv, needle) -> None:
    code, _, err = run_cli(capsys, "index", "update", "--index", str(old), *argv)

    assert_one_line_error(code, err, needle)
    assert sorted(p.name for p in old.parent.iterdir()) == ["idx"]


def test_index_update_of_a_missing_index_says_how_to_build_one(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "index", "update", "--index", str(tmp_path / "no"), "--delete", "a"
    )

    assert_one_line_error(code, err, "ragserve index build")
