"""Build an index folder from a docs folder: chunk, embed, index, write atomically.

Knows the build's steps and their order, how a finished version's files
(chunks, FAISS, BM25, manifest) are written into a folder, and of embedders
only their id, dimension and `embed()`; knows nothing of Ray Serve or HTTP,
and leaves FAISS, BM25 and the manifest's shape to `retrieval.faiss_build`,
`retrieval.bm25_index` and `retrieval.manifest`.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.embedder import Embedder
from retrieval.bm25_index import build_bm25, save_bm25
from retrieval.chunking import TextChunk, chunk_document, titled
from retrieval.config import IndexBuildConfig
from retrieval.documents import load_documents
from retrieval.errors import RetrievalError
from retrieval.faiss_build import build_faiss, write_faiss
from retrieval.faiss_index import gpu_wanted, import_faiss
from retrieval.manifest import (
    BM25_DIR,
    CHUNKS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    IndexManifest,
    ManifestDocument,
    content_version,
)
from retrieval.storage import (
    check_target,
    fsync_tree,
    install,
    sha256_file,
    write_chunks,
    write_synced,
)

logger = logging.getLogger(__name__)


def build_index(
    docs_dir: str | Path,
    out_dir: str | Path,
    embedder: Embedder,
    config: IndexBuildConfig | None = None,
    progress: bool = True,
) -> IndexManifest:
    """Index every document under `docs_dir` into the folder `out_dir`.

    Documents are chunked, embedded in batches of `config.embed_batch_size`
    (each chunk with its section title in front, when the chunk does not
    start with it) and added to a FAISS inner-product index under chunk ids
    0..n-1, and a BM25 index of the same texts is built. Everything is
    written to a hidden sibling folder of `out_dir`, flushed to disk, then
    renamed into place: an existing index at `out_dir` is replaced only once
    the new one is complete, and a failure at any point leaves it untouched
    and no temporary folder behind.

    Args:
        docs_dir: folder of .md / .markdown / .txt / .rst / .html documents.
        out_dir: the index folder; it may be missing, empty or an index.
        embedder: embeds the chunks; its `model_id` and `dimension` are
            recorded, and searches must use the same embedder.
        config: chunking, index type and device; defaults to
            `IndexBuildConfig()`.
        progress: show a progress bar on stderr while embedding.

    Returns:
        The manifest written to `out_dir/manifest.json`.

    Raises:
        DocumentError: the documents cannot be read (see `load_documents`).
        RetrievalError: `out_dir` is a file or a non-empty folder that is not
            an index, the embedder returned malformed vectors, or use_gpu is
            "always" without a GPU.
    """
    config = config or IndexBuildConfig()
    out = Path(out_dir).expanduser().absolute()
    check_target(out)
    gpu_wanted(import_faiss(), config.use_gpu)  # fail before the slow part
    documents = load_documents(docs_dir)
    per_doc = [
        chunk_document(doc, config.chunk_size, config.chunk_overlap)
        for doc in documents
    ]
    chunks = [chunk for doc_chunks in per_doc for chunk in doc_chunks]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        vectors = embed_chunks(chunks, embedder, config.embed_batch_size, progress)
        ids = np.arange(len(chunks), dtype=np.int64)
        index, index_type, nlist = build_faiss(vectors, ids, config)
        manifest = write_version(
            tmp,
            index,
            ids.tolist(),
            chunks,
            documents=[
                ManifestDocument(doc_id=d.doc_id, sha256=d.sha256, chunks=len(c))
                for d, c in zip(documents, per_doc, strict=True)
            ],
            embedder_model_id=embedder.model_id,
            dimension=embedder.dimension,
            index_type=index_type,
            ivf_nlist=nlist,
            hnsw_m=config.hnsw_m if index_type == "hnsw" else None,
            chunk_size=config.chunk_size,
            chunk_overlap=config.chunk_overlap,
        )
        install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "built %s index at %s: %d chunks from %d documents",
        index_type,
        out,
        len(chunks),
        len(documents),
    )
    return manifest


def write_version(
    folder: Path,
    index: Any,
    ids: list[int],
    chunks: list[TextChunk],
    documents: list[ManifestDocument],
    next_chunk_id: int = 0,
    **fields: Any,
) -> IndexManifest:
    """Write one index version into the empty `folder` and flush it to disk.

    Line r of chunks.jsonl is `chunks[r]` under `ids[r]` and BM25 row r; the
    manifest gets the files' checksums, the counts, the next free chunk id
    (past every id in `ids` and at least `next_chunk_id`, so a removed
    chunk's id is never given again) and the version id; `fields` are the
    other manifest fields.

    Returns:
        The manifest written.
    """
    write_chunks(folder / CHUNKS_FILE, chunks, ids)
    write_faiss(index, folder / INDEX_FILE)
    names = save_bm25(
        build_bm25([embedding_text(c) for c in chunks]), folder / BM25_DIR
    )
    files = [INDEX_FILE, CHUNKS_FILE, *(f"{BM25_DIR}/{n}" for n in names)]
    manifest = IndexManifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        document_count=len(documents),
        chunk_count=len(chunks),
        documents=documents,
        files={name: sha256_file(folder / name) for name in files},
        next_chunk_id=max(max(ids, default=-1) + 1, next_chunk_id),
        **fields,
    )
    manifest.version = content_version(manifest)
    write_synced(
        folder / MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode()
    )
    fsync_tree(folder)
    return manifest


def embedding_text(chunk: TextChunk) -> str:
    """What is embedded (and BM25-indexed) for a chunk: its section title in
    front when the chunk does not start with it."""
    return titled(chunk.text, chunk.title)


def embed_chunks(
    chunks: list[TextChunk], embedder: Embedder, batch_size: int, progress: bool
) -> np.ndarray:
    """Vectors of `chunks` (row i: chunk i), `batch_size` texts per call."""
    from tqdm import tqdm

    dim = embedder.dimension
    vectors = np.empty((len(chunks), dim), dtype=np.float32)
    with tqdm(
        total=len(chunks),
        desc="embedding chunks",
        unit="chunk",
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        for start in range(0, len(chunks), batch_size):
            batch = [embedding_text(c) for c in chunks[start : start + batch_size]]
            out = np.asarray(embedder.embed(batch), dtype=np.float32)
            if out.shape != (len(batch), dim):
                raise RetrievalError(
                    f"embedder {embedder.model_id!r} returned shape {out.shape} for "
                    f"{len(batch)} texts, expected ({len(batch)}, {dim}); check its "
                    "dimension"
                )
            vectors[start : start + len(batch)] = out
            bar.update(len(batch))
    if not np.isfinite(vectors).all():
        raise RetrievalError(
            f"embedder {embedder.model_id!r} returned NaN or infinite values; check "
            "the model"
        )
    return vectors
