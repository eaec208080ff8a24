"""Index integrity: loading refuses a mismatched, missing or damaged index, and
a build replaces an index atomically or not at all."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from retrieval.config import IndexBuildConfig
from retrieval.errors import IndexMismatchError, IndexNotFoundError, RetrievalError
from retrieval.faiss_index import FaissRetriever
from retrieval.index import build_index
from retrieval.manifest import read_manifest
from tests.factories_retrieval import FailingEmbedder, write_tree
from tests.unit.conftest import ask, load

# --- index: loading checks ---------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "dimension"),
    [("BAAI/bge-small-en-v1.5", 384), (None, 768)],
    ids=["other-model", "other-dimension"],
)
def test_loading_with_another_embedder_is_refused_naming_the_fix(
    tiny_index, embedder, model_id, dimension
):
    model_id = model_id or embedder.model_id

    with pytest.raises(IndexMismatchError) as info:
        FaissRetriever.load(tiny_index, model_id, dimension)

    message = str(info.value)
    assert embedder.model_id in message
    assert f"{dimension}-d" in message
    assert "ragserve index build --docs" in message
    assert f"models.embedder.model to {embedder.model_id!r}" in message


@pytest.mark.parametrize("make_dir", [False, True], ids=["missing", "empty"])
def test_loading_where_there_is_no_index_says_how_to_build_one(
    tmp_path, embedder, make_dir
):
    target = tmp_path / "index"
    if make_dir:
        target.mkdir()

    with pytest.raises(IndexNotFoundError, match="run `ragserve index build --docs"):
        load(target, embedder)
    with pytest.raises(IndexNotFoundError):
        read_manifest(target)


def _append_to_chunks(index: Path) -> None:
    with open(index / "chunks.jsonl", "a") as f:
        f.write('{"injected": true}\n')


def _flip_a_vector_byte(index: Path) -> None:
    data = bytearray((index / "index.faiss").read_bytes())
    data[-5] ^= 0xFF
    (index / "index.faiss").write_bytes(bytes(data))


def _delete_index_file(index: Path) -> None:
    (index / "index.faiss").unlink()


def _garble_manifest(index: Path) -> None:
    (index / "manifest.json").write_text("{not json")


def _future_manifest(index: Path) -> None:
    data = json.loads((index / "manifest.json").read_text())
    data["format_version"] = 99
    (index / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_append_to_chunks, "chunks.jsonl does not match its checksum"),
        (_flip_a_vector_byte, "index.faiss does not match its checksum"),
        (_delete_index_file, "index.faiss is missing"),
        (_garble_manifest, "manifest"),
        (_future_manifest, "format 99"),
    ],
    ids=["chunks-edited", "index-bitflip", "index-deleted", "manifest-garbled", "v99"],
)
def test_damaged_index_is_refused_with_a_rebuild_hint(
    tmp_path, tiny_index, embedder, damage, expected
):
    copy = Path(shutil.copytree(tiny_index, tmp_path / "index"))
    damage(copy)

    with pytest.raises(RetrievalError) as info:
        load(copy, embedder)

    assert expected in str(info.value)
    assert "ragserve index build" in str(info.value)


# --- index: atomic writes ----------------------------------------------------


def test_crash_mid_build_leaves_no_index_and_no_temporary_folder(
    tmp_path, tiny_docs, embedder
):
    failing = FailingEmbedder(embedder, fail_on_call=2)
    config = IndexBuildConfig(embed_batch_size=1)

    with pytest.raises(RuntimeError, match="simulated"):
        build_index(tiny_docs, tmp_path / "index", failing, config, progress=False)

    assert failing.calls == 2
    assert os.listdir(tmp_path) == []


def test_crash_while_rebuilding_keeps_the_existing_index_usable(
    tmp_path, tiny_docs, embedder
):
    out = tmp_path / "index"
    build_index(tiny_docs, out, embedder, progress=False)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    failing = FailingEmbedder(embedder, fail_on_call=2)

    with pytest.raises(RuntimeError, match="simulated"):
        build_index(
            tiny_docs,
            out,
            failing,
            IndexBuildConfig(embed_batch_size=1),
            progress=False,
        )

    assert os.listdir(tmp_path) == ["index"]
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    hits = ask(load(out, embedder), embedder, "How do I install it?")
    assert hits[0].doc_id == "install.md"


def test_rebuilding_replaces_the_index_and_cleans_up(tmp_path, tiny_docs, embedder):
    out = tmp_path / "index"
    build_index(tiny_docs, out, embedder, progress=False)
    new_docs = write_tree(tmp_path / "new-docs", {"only.md": "# Only\n\nsolo doc\n"})

    manifest = build_index(new_docs, out, embedder, progress=False)

    assert sorted(os.listdir(tmp_path)) == ["index", "new-docs"]
    assert [d.doc_id for d in read_manifest(out).documents] == ["only.md"]
    assert manifest == read_manifest(out)
    assert len(load(out, embedder)) == 1


def test_build_into_an_empty_folder_succeeds(tmp_path, tiny_docs, embedder):
    (tmp_path / "index").mkdir()

    build_index(tiny_docs, tmp_path / "index", embedder, progress=False)

    assert (
        len(load(tmp_path / "index", embedder))
        == read_manifest(tmp_path / "index").chunk_count
    )


def test_build_refuses_to_overwrite_a_folder_that_is_not_an_index(
    tmp_path, tiny_docs, embedder
):
    out = write_tree(tmp_path / "precious", {"thesis.tex": "years of work"})

    with pytest.raises(RetrievalError, match="refusing to overwrite"):
        build_index(tiny_docs, out, embedder, progress=False)

    assert os.listdir(tmp_path) == ["precious"]
    assert (out / "thesis.tex").read_text() == "years of work"


def test_build_refuses_a_file_as_output(tmp_path, tiny_docs, embedder):
    target = write_tree(tmp_path, {"out.txt": "keep"}) / "out.txt"

    with pytest.raises(RetrievalError, match="not a folder"):
        build_index(tiny_docs, target, embedder, progress=False)

    assert target.read_text() == "keep"
