"""The index manifest: what an index folder holds and how it was built.

Knows the folder's layout (its file names and format version) and the shape,
reading and validation of manifest.json; knows nothing of FAISS, embedders
or how the files are written.

Layout of an index folder::

    manifest.json   IndexManifest: embedder, sizes, documents, file checksums
    index.faiss     row i is the vector of chunk i
    chunks.jsonl    line i is chunk i: chunk_id, doc_id, index, title, text
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from retrieval.errors import IndexNotFoundError, RetrievalError, build_command_for

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"


class ManifestDocument(BaseModel):
    """One indexed document."""

    doc_id: str
    sha256: str
    chunks: int


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
