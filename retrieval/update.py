"""A new index version from an old one and the documents that changed.

Knows how a change set (documents added or replaced, doc ids removed) maps
onto an index version: which chunks keep their ids and vectors, which are
embedded, which are dropped, and that the result is a new folder written
atomically beside the old one, which is only read; knows nothing of Ray
Serve, HTTP or the command line.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.embedder import Embedder
from retrieval.chunking import TextChunk, chunk_document
from retrieval.documents import Document, load_documents
from retrieval.errors import RetrievalError
from retrieval.faiss_build import update_faiss
from retrieval.faiss_index import IndexFolder, read_index_folder
from retrieval.index import embed_chunks, embedding_text, write_version
from retrieval.manifest import (
    MANIFEST_FILE,
    IndexChanges,
    IndexManifest,
    ManifestDocument,
    ParentVersion,
    read_manifest,
)
from retrieval.storage import check_target, fsync_dir

logger = logging.getLogger(__name__)

_VERSION_SUFFIX = re.compile(r"-v[0-9a-f]{12}$")


class NothingChangedError(RetrievalError):
    """The change set leaves the index as it is: no version is written."""


@dataclass
class DocumentChanges:
    """Documents to add or replace (matched by doc_id) and doc ids to remove."""

    upserts: list[Document] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


def changes_from_folder(
    manifest: IndexManifest,
    docs_dir: str | Path,
    remove_missing: bool = True,
    deletes: Iterable[str] = (),
) -> DocumentChanges:
    """The changes that make an index hold what `docs_dir` holds.

    Args:
        manifest: the index's manifest.
        docs_dir: the documents folder (read like `ragserve index build`).
        remove_missing: documents of the index that are not in the folder are
            removed (the folder is the whole corpus); False: the folder only
            adds and replaces.
        deletes: doc ids removed besides.
    """
    documents = load_documents(docs_dir)
    present = {d.doc_id for d in documents}
    gone = [d.doc_id for d in manifest.documents if d.doc_id not in present]
    removed = list(dict.fromkeys([*(gone if remove_missing else []), *deletes]))
    return DocumentChanges(upserts=documents, deletes=removed)


@dataclass
class _Plan:
    """What the new version keeps, embeds and drops."""

    kept_ids: list[int]
    kept_chunks: list[TextChunk]
    new_chunks: list[TextChunk]
    new_ids: list[int]
    removed_ids: list[int]
    added: list[str]
    replaced: list[str]
    removed: list[str]
    documents: dict[str, ManifestDocument]
    next_id: int = 0


def plan_update(parent: IndexFolder, changes: DocumentChanges) -> _Plan:
    """Which chunks of `parent` survive `changes` and which must be embedded.

    A document whose sha256 is unchanged keeps every chunk. A changed
    document is chunked again with the parent's settings; a new chunk whose
    embedded text equals one of that document's old chunks keeps that
    chunk's id and vector, the others get fresh ids (never reused).

    Raises:
        RetrievalError: a doc id to delete is not in the index, or is also
            uploaded.
    """
    m = parent.manifest
    old_docs = {d.doc_id: d for d in m.documents}
    upserts = {d.doc_id: d for d in changes.upserts}
    for doc_id in changes.deletes:
        if doc_id not in old_docs:
            raise RetrievalError(
                f"cannot delete {doc_id!r}: index {parent.folder} holds no such "
                "document (`ragserve release show` lists the documents)"
            )
        if doc_id in upserts:
            raise RetrievalError(
                f"{doc_id!r} is both uploaded and deleted; do one or the other"
            )
    changed = {
        i: d
        for i, d in upserts.items()
        if i not in old_docs or old_docs[i].sha256 != d.sha256
    }
    by_doc: dict[str, list[tuple[int, TextChunk]]] = {}
    for chunk_id, chunk in zip(parent.ids, parent.chunks, strict=True):
        by_doc.setdefault(chunk.doc_id, []).append((chunk_id, chunk))
    next_id = m.next_chunk_id if m.next_chunk_id is not None else len(parent.ids)
    next_id = max(next_id, max(parent.ids, default=-1) + 1)
    plan = _Plan([], [], [], [], [], [], [], list(changes.deletes), {})
    for doc_id in sorted(set(old_docs) | set(changed)):
        old = by_doc.get(doc_id, [])
        if doc_id in changes.deletes:
            plan.removed_ids += [i for i, _ in old]
            continue
        if doc_id not in changed:
            plan.kept_ids += [i for i, _ in old]
            plan.kept_chunks += [c for _, c in old]
            plan.documents[doc_id] = old_docs[doc_id]
            continue
        (plan.replaced if doc_id in old_docs else plan.added).append(doc_id)
        reusable = {embedding_text(c): i for i, c in reversed(old)}
        new = chunk_document(changed[doc_id], m.chunk_size, m.chunk_overlap)
        for chunk in new:
            reused = reusable.pop(embedding_text(chunk), None)
            if reused is None:
                plan.new_chunks.append(chunk)
                plan.new_ids.append(next_id)
                next_id += 1
            else:
                plan.kept_ids.append(reused)
                plan.kept_chunks.append(chunk)
        plan.removed_ids += list(reusable.values())
        doc = changed[doc_id]
        plan.documents[doc_id] = ManifestDocument(
            doc_id=doc_id, sha256=doc.sha256, chunks=len(new)
        )
    plan.next_id = next_id
    return plan


def update_index(
    index_dir: str | Path,
    changes: DocumentChanges,
    embedder: Embedder,
    out_dir: str | Path | None = None,
    embed_batch_size: int = 64,
    progress: bool = False,
) -> tuple[IndexManifest, Path]:
    """Write a new index version: `index_dir` with `changes` applied.

    Only the chunks no version holds yet are embedded; every other chunk
    keeps its id and vector, so citations of the old version still name the
    same chunk. The new version goes to `out_dir` (default: a sibling named
    after the parent and the new version id, `NAME-v<12 hex>`), written to a
    hidden temporary folder, flushed and renamed into place; `index_dir` is
    only read, so a crash at any point leaves it as it was.

    Returns:
        (the new manifest, the new version's folder).

    Raises:
        NothingChangedError: every upload has the hash already indexed and
            nothing is deleted.
        RetrievalError: the index cannot be read, was built with another
            embedder, `out_dir` exists and is not an empty folder, or a
            delete names an unknown document.
    """
    parent = read_index_folder(index_dir, embedder.model_id, embedder.dimension)
    plan = plan_update(parent, changes)
    if not (plan.added or plan.replaced or plan.removed):
        raise NothingChangedError(
            f"nothing to update: index {parent.folder} already holds these "
            "documents with the same content"
        )
    m = parent.manifest
    target = Path(out_dir).expanduser().absolute() if out_dir else None
    if target is not None:
        _check_new(target)
    vectors = embed_chunks(plan.new_chunks, embedder, embed_batch_size, progress)
    index = update_faiss(
        parent.index,
        m.index_type,
        np.asarray(plan.removed_ids, dtype=np.int64),
        vectors,
        np.asarray(plan.new_ids, dtype=np.int64),
        m.hnsw_m,
    )
    rows = sorted(
        zip(
            plan.kept_ids + plan.new_ids,
            plan.kept_chunks + plan.new_chunks,
            strict=True,
        ),
        key=lambda row: (row[1].doc_id, row[1].index),
    )
    ids, chunks = [i for i, _ in rows], [c for _, c in rows]
    home = (target or parent.folder.absolute()).parent
    tmp = Path(tempfile.mkdtemp(prefix=".index-update-", dir=home))
    try:
        manifest = write_version(tmp, index, ids, chunks, **_fields(parent, plan))
        out = target or _default_out(parent.folder.absolute(), manifest)
        if target is None and _same_version(out, manifest):
            shutil.rmtree(tmp)  # content-addressed: this version exists already
            return read_manifest(out), out
        _check_new(out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "index version %s at %s: +%s ~%s -%s documents, %d chunks embedded",
        manifest.version and manifest.version[:12],
        out,
        len(plan.added),
        len(plan.replaced),
        len(plan.removed),
        len(plan.new_ids),
    )
    return manifest, out


def _fields(parent: IndexFolder, plan: _Plan) -> dict[str, Any]:
    """The new version's manifest fields, bar what `write_version` counts."""
    m = parent.manifest
    return {
        "documents": [plan.documents[d] for d in sorted(plan.documents)],
        "next_chunk_id": plan.next_id,
        **m.model_dump(
            include={
                "embedder_model_id",
                "dimension",
                "index_type",
                "ivf_nlist",
                "hnsw_m",
                "chunk_size",
                "chunk_overlap",
            }
        ),
        "parent": ParentVersion(
            path=str(parent.folder.absolute()),
            version=m.version,
            created_at=m.created_at,
        ),
        "changes": IndexChanges(
            added=plan.added,
            replaced=plan.replaced,
            removed=plan.removed,
            chunks_embedded=len(plan.new_ids),
            chunks_kept=len(plan.kept_ids),
            chunks_removed=len(plan.removed_ids),
        ),
    }


def _same_version(out: Path, manifest: IndexManifest) -> bool:
    if not (out / MANIFEST_FILE).is_file():
        return False
    return read_manifest(out).version == manifest.version


def _default_out(parent: Path, manifest: IndexManifest) -> Path:
    base = _VERSION_SUFFIX.sub("", parent.name)
    return parent.with_name(f"{base}-v{(manifest.version or '')[:12]}")


def _check_new(out: Path) -> None:
    """Versions are immutable: refuse an `out` that exists and is not empty."""
    check_target(out)
    if out.exists() and (out / MANIFEST_FILE).is_file():
        version = read_manifest(out).version
        raise RetrievalError(
            f"{out} already holds an index (version {(version or '?')[:12]}); "
            "index versions are immutable: pass a new --out folder"
        )
