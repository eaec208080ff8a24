"""The index manifest: what an index folder holds and how it was built.

Knows the folder's layout (its file names and format version) and the shape,
reading and validation of manifest.json; knows nothing of FAISS, embedders
or how the files are written.

Layout of an index folder (format 2)::

    manifest.json   IndexManifest: embedder, sizes, documents, file checksums,
                    version id, parent version and what changed from it
    index.faiss     an IndexIDMap2: each vector under its chunk's stable id
    chunks.jsonl    line r is BM25 row r: chunk_id, doc_id, index, title, text
    bm25/           the bm25s index of the same chunks, row r = line r

Format 1 (still read) has no bm25/ and no id map: FAISS row i is chunk i.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from retrieval.errors import IndexNotFoundError, RetrievalError, build_command_for

FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
BM25_DIR = "bm25"


class ManifestDocument(BaseModel):
    """One indexed document."""

    doc_id: str
    sha256: str
    chunks: int


class ParentVersion(BaseModel):
    """The index version an update started from."""

    path: str
    version: str | None = None
    created_at: str


class IndexChanges(BaseModel):
    """What an update changed from its parent (document ids, chunk counts)."""

    added: list[str]
    replaced: list[str]
    removed: list[str]
    chunks_embedded: int
    chunks_kept: int
    chunks_removed: int


class IndexManifest(BaseModel):
    """What an index folder holds and how it was built (manifest.json)."""

    format_version: int = FORMAT_VERSION
    created_at: str
    embedder_model_id: str
    dimension: int
    metric: Literal["inner_product"] = "inner_product"
    index_type: Literal["flat", "ivf", "hnsw"]
    ivf_nlist: int | None = None
    hnsw_m: int | None = None
    chunk_size: int
    chunk_overlap: int
    document_count: int
    chunk_count: int
    documents: list[ManifestDocument]
    files: dict[str, str]
    version: str | None = None
    next_chunk_id: int | None = None
    parent: ParentVersion | None = None
    changes: IndexChanges | None = None

    @property
    def stable_ids(self) -> bool:
        """FAISS ids are chunk ids (format 2), not row numbers (format 1)."""
        return self.format_version >= 2

    @property
    def has_bm25(self) -> bool:
        return any(name.startswith(BM25_DIR + "/") for name in self.files)


def content_version(manifest: IndexManifest) -> str:
    """The version id: sha256 of what the index holds and how it was built
    (embedder, settings, documents, file checksums), not of when."""
    content = manifest.model_dump(
        mode="json",
        include={
            "embedder_model_id",
            "dimension",
            "metric",
            "index_type",
            "ivf_nlist",
            "hnsw_m",
            "chunk_size",
            "chunk_overlap",
            "documents",
            "files",
        },
    )
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def read_manifest(index_dir: str | Path) -> IndexManifest:
    """Read and validate `index_dir/manifest.json`.

    Args:
        index_dir: an index folder written by `build_index`.

    Returns:
        The manifest.

    Raises:
        IndexNotFoundError: the folder or its manifest.json is missing.
        RetrievalError: the manifest is unreadable, invalid or from a newer
            format.
    """
    folder = Path(index_dir).expanduser()
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise IndexNotFoundError(
            f"no index at {folder} (no {MANIFEST_FILE}); run "
            f"`{build_command_for(folder)}` first"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RetrievalError(
            f"index manifest {path} is unreadable ({type(exc).__name__}); rebuild "
            f"it with `{build_command_for(folder)}`"
        ) from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RetrievalError(
            f"index {folder} has format {version}, newer than this ragserve reads "
            f"({FORMAT_VERSION}); upgrade ragserve or rebuild it with "
            f"`{build_command_for(folder)}`"
        )
    try:
        return IndexManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        raise RetrievalError(
            f"index manifest {path} is invalid ({where}: {first['msg']}); rebuild "
            f"it with `{build_command_for(folder)}`"
        ) from exc
