"""Build a FAISS index from a docs folder, write it atomically, load and search it.

Knows FAISS (flat / IVF / HNSW, GPU when present), the on-disk layout and its
manifest; knows nothing of Ray Serve or HTTP, and of embedders only their id,
dimension and `embed()`.

Layout of an index folder::

    manifest.json   IndexManifest: embedder, sizes, documents, file checksums
    index.faiss     row i is the vector of chunk i
    chunks.jsonl    line i is chunk i: chunk_id, doc_id, index, title, text
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from models.embedder import Embedder
from retrieval.chunking import TextChunk, chunk_document
from retrieval.config import IndexBuildConfig
from retrieval.documents import load_documents
from retrieval.errors import (
    DocumentError,
    IndexMismatchError,
    IndexNotFoundError,
    RetrievalError,
)
from retrieval.types import Hit

__all__ = [
    "DocumentError",
    "FaissRetriever",
    "IndexManifest",
    "IndexMismatchError",
    "IndexNotFoundError",
    "RetrievalError",
    "build_index",
    "read_manifest",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
# k-means wants this many training points per list (FAISS warns below it).
_POINTS_PER_LIST = 39
# FAISS GPU indexes answer at most this many neighbours per query.
_GPU_MAX_K = 2048


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
    start with it) and added to a FAISS inner-product index, row i being
    chunk i. Everything is written to a hidden sibling folder of `out_dir`,
    flushed to disk, then renamed into place: an existing index at `out_dir`
    is replaced only once the new one is complete, and a failure at any
    point leaves it untouched and no temporary folder behind.

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
    _check_target(out)
    _gpu_wanted(_faiss(), config.use_gpu)  # fail before the slow part
    documents = load_documents(docs_dir)
    per_doc = [
        chunk_document(doc, config.chunk_size, config.chunk_overlap)
        for doc in documents
    ]
    chunks = [chunk for doc_chunks in per_doc for chunk in doc_chunks]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        _write_chunks(tmp / CHUNKS_FILE, chunks)
        vectors = _embed(chunks, embedder, config.embed_batch_size, progress)
        index, index_type, nlist = _build_faiss(vectors, config)
        _write_faiss(index, tmp / INDEX_FILE)
        manifest = IndexManifest(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            embedder_model_id=embedder.model_id,
            dimension=embedder.dimension,
            index_type=index_type,
            ivf_nlist=nlist,
            hnsw_m=config.hnsw_m if index_type == "hnsw" else None,
            chunk_size=config.chunk_size,
            chunk_overlap=config.chunk_overlap,
            document_count=len(documents),
            chunk_count=len(chunks),
            documents=[
                ManifestDocument(doc_id=d.doc_id, sha256=d.sha256, chunks=len(c))
                for d, c in zip(documents, per_doc, strict=True)
            ],
            files={
                name: _sha256_file(tmp / name) for name in (INDEX_FILE, CHUNKS_FILE)
            },
        )
        _write_synced(
            tmp / MANIFEST_FILE, (manifest.model_dump_json(indent=2) + "\n").encode()
        )
        _fsync_dir(tmp)
        _install(tmp, out)
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
            f"`{_build_command(folder)}` first"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RetrievalError(
            f"index manifest {path} is unreadable ({type(exc).__name__}); rebuild "
            f"it with `{_build_command(folder)}`"
        ) from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RetrievalError(
            f"index {folder} has format {version}, newer than this ragserve reads "
            f"({FORMAT_VERSION}); upgrade ragserve or rebuild it with "
            f"`{_build_command(folder)}`"
        )
    try:
        return IndexManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        raise RetrievalError(
            f"index manifest {path} is invalid ({where}: {first['msg']}); rebuild "
            f"it with `{_build_command(folder)}`"
        ) from exc


class FaissRetriever:
    """Nearest-neighbour search over an index folder written by `build_index`.

    Use `FaissRetriever.load`. Searches may run from several threads.

    Attributes:
        manifest: the index's manifest.
        index_dir: the folder it was loaded from.
        on_gpu: whether searches run on a GPU.
    """

    def __init__(
        self,
        index: Any,
        manifest: IndexManifest,
        chunks: list[TextChunk],
        index_dir: Path,
        on_gpu: bool,
    ) -> None:
        self._index = index
        self._chunks = chunks
        self.manifest = manifest
        self.index_dir = index_dir
        self.on_gpu = on_gpu
        # FAISS CPU searches are thread-safe; GPU resources are not.
        self._lock = threading.Lock() if on_gpu else None

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        embedder_model_id: str,
        dimension: int,
        use_gpu: Literal["auto", "never", "always"] = "auto",
    ) -> FaissRetriever:
        """Load an index and check it fits the configured embedder.

        Args:
            index_dir: folder written by `build_index`.
            embedder_model_id: `model_id` of the embedder that will embed
                queries.
            dimension: that embedder's dimension.
            use_gpu: "auto" moves flat and IVF indexes to all GPUs when FAISS
                has GPU support and sees a CUDA device; "always" fails
                without one; "never" stays on CPU. HNSW always stays on CPU.

        Returns:
            The retriever.

        Raises:
            IndexNotFoundError: no index at `index_dir`.
            IndexMismatchError: the index was built with another embedder id
                or dimension.
            RetrievalError: a file is missing, fails its checksum or cannot be
                parsed (corrupt), or use_gpu is "always" without a GPU.
        """
        folder = Path(index_dir).expanduser()
        manifest = read_manifest(folder)
        if (
            manifest.embedder_model_id != embedder_model_id
            or manifest.dimension != dimension
        ):
            raise IndexMismatchError(
                f"index {folder} was built with embedder "
                f"{manifest.embedder_model_id!r} ({manifest.dimension}-d) but the "
                f"configured embedder is {embedder_model_id!r} ({dimension}-d); "
                f"rebuild with `{_build_command(folder)}` or set "
                f"models.embedder.model to {manifest.embedder_model_id!r}"
            )
        for name in (INDEX_FILE, CHUNKS_FILE):
            if name not in manifest.files:
                raise _corrupt(folder, f"{MANIFEST_FILE} lists no checksum for {name}")
        for name, expected in manifest.files.items():
            path = folder / name
            if not path.is_file():
                raise _corrupt(folder, f"{name} is missing")
            if _sha256_file(path) != expected:
                raise _corrupt(folder, f"{name} does not match its checksum")
        chunks = _read_chunks(folder / CHUNKS_FILE, folder)
        faiss = _faiss()
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as exc:
            raise _corrupt(folder, f"{INDEX_FILE} cannot be read") from exc
        if (
            index.ntotal != manifest.chunk_count
            or len(chunks) != manifest.chunk_count
            or index.d != manifest.dimension
        ):
            raise _corrupt(
                folder,
                f"it holds {index.ntotal} vectors of {index.d} dimensions and "
                f"{len(chunks)} chunks, the manifest says {manifest.chunk_count} "
                f"of {manifest.dimension}",
            )
        on_gpu = False
        if manifest.index_type != "hnsw" and _gpu_wanted(faiss, use_gpu):
            index = faiss.index_cpu_to_all_gpus(index)
            on_gpu = True
        elif manifest.index_type == "hnsw" and use_gpu == "always":
            logger.warning("FAISS has no GPU HNSW index; %s stays on CPU", folder)
        return cls(index, manifest, chunks, folder, on_gpu)

    def __len__(self) -> int:
        return len(self._chunks)

    def search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Find the `k` chunks closest to each query vector.

        Args:
            vectors: (n, dimension) query vectors from the index's embedder
                (L2-normalised, so scores are cosine similarities).
            k: hits per query (>= 1); more than the index holds returns all.

        Returns:
            n lists of up to `k` hits, best (highest score) first.

        Raises:
            ValueError: k < 1 or vectors of the wrong shape.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.manifest.dimension:
            raise ValueError(
                f"expected query vectors of shape (n, {self.manifest.dimension}), "
                f"got {queries.shape}"
            )
        if queries.shape[0] == 0:
            return []
        k = min(k, len(self._chunks), _GPU_MAX_K if self.on_gpu else k)
        if self._lock is None:
            scores, rows = self._index.search(queries, k)
        else:
            with self._lock:
                scores, rows = self._index.search(queries, k)
        return [
            [
                self._hit(int(row), float(score))
                for score, row in zip(score_row, id_row, strict=True)
                if row >= 0
            ]
            for score_row, id_row in zip(scores, rows, strict=True)
        ]

    def _hit(self, row: int, score: float) -> Hit:
        chunk = self._chunks[row]
        return Hit(
            chunk_id=row,
            doc_id=chunk.doc_id,
            text=chunk.text,
            score=score,
            title=chunk.title,
        )


def _build_command(folder: Path) -> str:
    return f"ragserve index build --docs DIR --out {shlex.quote(str(folder))}"


def _corrupt(folder: Path, what: str) -> RetrievalError:
    return RetrievalError(
        f"index {folder} is corrupt: {what}; rebuild it with `{_build_command(folder)}`"
    )


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise RetrievalError(
            "faiss is not installed; run 'pip install faiss-cpu' (or faiss-gpu "
            "on CUDA machines)"
        ) from exc
    return faiss


def _gpu_wanted(faiss: Any, use_gpu: str) -> bool:
    if use_gpu == "never":
        return False
    available = (
        hasattr(faiss, "StandardGpuResources")
        and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
    )
    if use_gpu == "always" and not available:
        raise RetrievalError(
            "use_gpu is 'always' but FAISS has no GPU support or sees no CUDA "
            "device; install faiss-gpu on a CUDA machine or set use_gpu to 'auto'"
        )
    return bool(available)


def _check_target(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise RetrievalError(
            f"{out} exists and is not a folder; pass a folder path as the index output"
        )
    if (out / MANIFEST_FILE).is_file():
        return
    if any(out.iterdir()):
        raise RetrievalError(
            f"{out} is a non-empty folder that is not a ragserve index (no "
            f"{MANIFEST_FILE}); refusing to overwrite it: pass a new or empty "
            "folder as the index output"
        )


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` folder to `out`, replacing an index there."""
    _check_target(out)
    if out.exists() and (out / MANIFEST_FILE).is_file():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        _fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    if out.exists():
        out.rmdir()
    os.rename(tmp, out)
    _fsync_dir(out.parent)


def _embedding_text(chunk: TextChunk) -> str:
    first_line = chunk.text.split("\n", 1)[0]
    if chunk.title and chunk.title not in first_line:
        return f"{chunk.title}\n\n{chunk.text}"
    return chunk.text


def _embed(
    chunks: list[TextChunk], embedder: Embedder, batch_size: int, progress: bool
) -> np.ndarray:
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
            batch = [_embedding_text(c) for c in chunks[start : start + batch_size]]
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


def _ivf_nlist(n: int, requested: int | None) -> int:
    """Lists for `n` vectors; 0 when there are too few to train one."""
    cap = n // _POINTS_PER_LIST
    nlist = requested or max(1, round(4 * math.sqrt(n)))
    if requested and requested > cap:
        logger.warning(
            "ivf_nlist=%d needs %d chunks to train, the corpus has %d; using %d",
            requested,
            requested * _POINTS_PER_LIST,
            n,
            cap,
        )
    return min(nlist, cap)


def _build_faiss(
    vectors: np.ndarray, config: IndexBuildConfig
) -> tuple[Any, Literal["flat", "ivf", "hnsw"], int | None]:
    faiss = _faiss()
    n, dim = vectors.shape
    gpu = _gpu_wanted(faiss, config.use_gpu)
    if config.index_type == "hnsw":
        if gpu:
            logger.info("FAISS has no GPU HNSW index; building it on CPU")
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = config.hnsw_ef_search
        index.add(vectors)
        return index, "hnsw", None
    if config.index_type == "ivf":
        nlist = _ivf_nlist(n, config.ivf_nlist)
        if nlist >= 1:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(
                quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            if gpu:
                on_gpu = faiss.index_cpu_to_all_gpus(index)
                on_gpu.train(vectors)
                on_gpu.add(vectors)
                index = faiss.index_gpu_to_cpu(on_gpu)
            else:
                index.train(vectors)
                index.add(vectors)
            index.nprobe = min(config.ivf_nprobe, nlist)
            return index, "ivf", nlist
        logger.warning(
            "IVF needs at least %d chunks to train, the corpus has %d; building a "
            "flat (exact) index instead",
            _POINTS_PER_LIST,
            n,
        )
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index, "flat", None


def _write_faiss(index: Any, path: Path) -> None:
    _faiss().write_index(index, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_chunks(path: Path, chunks: list[TextChunk]) -> None:
    lines = [
        json.dumps(
            {
                "chunk_id": i,
                "doc_id": c.doc_id,
                "index": c.index,
                "title": c.title,
                "text": c.text,
            },
            ensure_ascii=False,
        )
        + "\n"
        for i, c in enumerate(chunks)
    ]
    _write_synced(path, "".join(lines).encode("utf-8"))


def _read_chunks(path: Path, folder: Path) -> list[TextChunk]:
    chunks = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                chunks.append(
                    TextChunk(
                        doc_id=record["doc_id"],
                        text=record["text"],
                        title=record["title"],
                        index=record["index"],
                    )
                )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _corrupt(folder, f"{CHUNKS_FILE} cannot be parsed") from exc
    return chunks


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
