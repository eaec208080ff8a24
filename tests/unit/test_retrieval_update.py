"""Incremental index versions: an update embeds only what changed, keeps every
other chunk's id and vector, records its parent and diff, never touches the
old version, and a killed update leaves the old version loadable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.chunking import chunk_document
from retrieval.config import IndexBuildConfig
from retrieval.documents import load_documents
from retrieval.errors import RetrievalError
from retrieval.index import build_index, embedding_text
from retrieval.manifest import read_manifest
from retrieval.types import SearchMode
from retrieval.update import (
    DocumentChanges,
    NothingChangedError,
    changes_from_folder,
    update_index,
)
from tests.conftest import REPO
from tests.factories_retrieval import (
    CountingEmbedder,
    downgrade_to_format_1,
    write_tree,
)
from tests.unit.conftest import TINY_DOCS, ask, load

INSTALL_V2 = (
    "# Installing\n\nRun make install to create the virtual environment with "
    "pip.\n\n## GPU\n\nOn CUDA machines install faiss-gpu and set use_gpu to "
    "always in the retrieval config.\n"
)
NEW_DOC = "# Sourdough\n\nFeed the starter with rye flour the night before.\n"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _chunk_ids(folder: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in (folder / "chunks.jsonl").open():
        record = json.loads(line)
        out.setdefault(record["doc_id"], []).append(record["chunk_id"])
    return out


@pytest.fixture
def old(tmp_path, tiny_docs, embedder) -> Path:
    out = tmp_path / "idx"
    build_index(tiny_docs, out, embedder, progress=False)
    return out


@pytest.fixture
def changed_docs(tmp_path) -> Path:
    """install.md edited, weather.txt gone, sourdough.md new."""
    files = {**TINY_DOCS, "install.md": INSTALL_V2, "sourdough.md": NEW_DOC}
    del files["weather.txt"]
    return write_tree(tmp_path / "docs-v2", files)


def test_update_embeds_only_the_changed_chunks_and_records_the_diff(
    old, changed_docs, embedder
):
    before = _snapshot(old)
    parent = read_manifest(old)
    counting = CountingEmbedder(embedder)
    changes = changes_from_folder(parent, changed_docs)

    manifest, out = update_index(old, changes, counting)

    assert out == old.with_name(f"idx-v{manifest.version[:12]}")
    assert manifest.parent.path == str(old) and manifest.parent.version
    assert manifest.parent.version == parent.version != manifest.version
    assert manifest.changes.added == ["sourdough.md"]
    assert manifest.changes.replaced == ["install.md"]
    assert manifest.changes.removed == ["weather.txt"]
    # Only chunks whose text is new were embedded: the edited section of
    # install.md and the new document; cooking.md and install.md's
    # unchanged first section kept their vectors.
    docs = {d.doc_id: d for d in load_documents(changed_docs)}
    old_texts = {embedding_text(c) for c in load(old, embedder)._chunks}
    expected = [
        embedding_text(c)
        for doc_id in ("install.md", "sourdough.md")
        for c in chunk_document(docs[doc_id], 200, 40)
        if embedding_text(c) not in old_texts
    ]
    assert sorted(counting.texts) == sorted(expected)
    assert 0 < len(expected) < manifest.chunk_count
    assert manifest.changes.chunks_embedded == len(expected)
    assert [d.doc_id for d in manifest.documents] == sorted(docs)
    assert _snapshot(old) == before  # the old version is untouched
    assert len(load(old, embedder)) == parent.chunk_count


def test_unchanged_chunks_keep_their_ids_and_new_ids_are_never_reused(
    old, changed_docs, embedder
):
    parent = read_manifest(old)
    old_ids = _chunk_ids(old)

    manifest, out = update_index(
        old, changes_from_folder(parent, changed_docs), embedder
    )

    new_ids = _chunk_ids(out)
    assert new_ids["cooking.md"] == old_ids["cooking.md"]
    assert new_ids["install.md"][0] == old_ids["install.md"][0]
    fresh = set(new_ids["sourdough.md"]) | set(new_ids["install.md"][1:])
    assert min(fresh) >= parent.next_chunk_id
    assert manifest.next_chunk_id == max(fresh) + 1
    # A citation of the old version names the same chunk in the new one.
    question = "How do I make pancakes?"
    old_hit = ask(load(old, embedder), embedder, question)[0]
    new_hit = ask(load(out, embedder), embedder, question)[0]
    assert (new_hit.chunk_id, new_hit.text) == (old_hit.chunk_id, old_hit.text)


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_a_deleted_document_is_never_retrieved_again(old, embedder, mode):
    changes = DocumentChanges(deletes=["weather.txt"])

    manifest, out = update_index(old, changes, embedder, out_dir=old.parent / "v2")

    question = "Tomorrow will be sunny in the morning with rain showers"
    retriever = load(out, embedder)
    hits = retriever.search(
        embedder.embed([question]), 100, [question], SearchMode(mode)
    )[0]
    assert manifest.changes.removed == ["weather.txt"]
    assert manifest.changes.chunks_embedded == 0
    assert "weather.txt" not in {h.doc_id for h in hits}
    assert len(retriever) == manifest.chunk_count == read_manifest(old).chunk_count - 1
    before = load(old, embedder).search(
        embedder.embed([question]), 100, [question], SearchMode(mode)
    )[0]
    assert before[0].doc_id == "weather.txt"


@pytest.mark.parametrize(
    "config",
    [
        IndexBuildConfig(index_type="hnsw", hnsw_m=16),
        IndexBuildConfig(index_type="ivf", ivf_nlist=4, ivf_nprobe=4),
    ],
    ids=["hnsw", "ivf"],
)
def test_every_index_type_updates_with_stable_ids(
    tmp_path, many_docs, embedder, config
):
    old = tmp_path / "idx"
    build_index(many_docs, old, embedder, config, progress=False)
    docs = write_tree(
        tmp_path / "upload", {"d000-0.txt": "The fox in Lisbon juggles oranges."}
    )
    changes = DocumentChanges(
        upserts=load_documents(docs), deletes=["d001-0.txt", "d002-1.txt"]
    )
    old_ids = _chunk_ids(old)

    manifest, out = update_index(old, changes, embedder)

    retriever = load(out, embedder)
    ids = _chunk_ids(out)
    assert manifest.index_type == config.index_type
    assert len(retriever) == 240 - 2
    assert ids["d003-0.txt"] == old_ids["d003-0.txt"]
    assert ids["d000-0.txt"] != old_ids["d000-0.txt"]
    assert "d001-0.txt" not in ids
    for doc_id, text in [
        ("d000-0.txt", "The fox in Lisbon juggles oranges."),
        ("d003-0.txt", (many_docs / "d003-0.txt").read_text()),
    ]:
        hit = ask(retriever, embedder, text, k=1)[0]
        assert (hit.doc_id, hit.chunk_id) == (doc_id, ids[doc_id][0])


def test_an_index_from_before_versions_loads_and_updates(old, changed_docs, embedder):
    downgrade_to_format_1(old)
    retriever = load(old, embedder)
    question = "How do I make pancakes?"
    assert ask(retriever, embedder, question)[0].doc_id == "cooking.md"
    with pytest.raises(RetrievalError, match="no BM25 index"):
        retriever.search(
            embedder.embed([question]), 3, [question], SearchMode("hybrid")
        )
    old_ids = _chunk_ids(old)

    manifest, out = update_index(
        old, changes_from_folder(read_manifest(old), changed_docs), embedder
    )

    assert read_manifest(old).format_version == 1
    assert manifest.format_version == 2 and manifest.parent.version is None
    assert _chunk_ids(out)["cooking.md"] == old_ids["cooking.md"]
    hybrid = load(out, embedder).search(
        embedder.embed([question]), 3, [question], SearchMode("hybrid")
    )
    assert hybrid[0][0].doc_id == "cooking.md"


def test_updates_that_change_nothing_or_name_unknown_documents_are_refused(
    old, tiny_docs, embedder, tmp_path
):
    with pytest.raises(NothingChangedError, match="nothing to update"):
        update_index(old, changes_from_folder(read_manifest(old), tiny_docs), embedder)
    with pytest.raises(RetrievalError, match="no such document"):
        update_index(old, DocumentChanges(deletes=["nope.md"]), embedder)
    with pytest.raises(RetrievalError, match="immutable"):
        update_index(old, DocumentChanges(deletes=["weather.txt"]), embedder, old)
    assert sorted(os.listdir(tmp_path)) == ["idx"]


_CHILD = """
import sys, time
from pathlib import Path
import retrieval.index as index_module
from models.embedder import SentenceTransformerEmbedder
from retrieval.manifest import read_manifest
from retrieval.update import changes_from_folder, update_index

old, docs, marker, where = sys.argv[1:5]
embedder = SentenceTransformerEmbedder("default")
real_embed, real_fsync = embedder.embed, index_module.fsync_tree

def hold(*_):
    Path(marker).write_text("ready")
    time.sleep(600)

def embed(texts):
    if where == "embedding":
        hold()
    return real_embed(texts)

def fsync_tree(folder):
    real_fsync(folder)
    hold()  # every file of the new version written, not yet renamed

embedder.embed = embed
index_module.fsync_tree = fsync_tree
update_index(old, changes_from_folder(read_manifest(old), docs), embedder)
"""


@pytest.mark.parametrize("where", ["embedding", "before-rename"])
def test_an_update_killed_mid_way_leaves_the_old_version_loadable(
    old, changed_docs, embedder, tmp_path, where
):
    before = _snapshot(old)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(old), str(changed_docs), str(marker), where],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached its hold"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stderr.close()

    assert child.returncode == -signal.SIGKILL
    assert _snapshot(old) == before
    left = sorted(os.listdir(old.parent))
    assert [n for n in left if not n.startswith(".")] == ["docs-v2", "idx", "marker"]
    if where == "before-rename":  # the unfinished version is a hidden folder
        assert [n for n in left if n.startswith(".index-update-")]
    hits = ask(load(old, embedder), embedder, "Will it rain tomorrow?")
    assert hits[0].doc_id == "weather.txt"
    manifest, out = update_index(
        old, changes_from_folder(read_manifest(old), changed_docs), embedder
    )
    assert load(out, embedder) is not None and manifest.changes.added
