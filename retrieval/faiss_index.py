"""Load an index folder checked, and search it: dense, sparse or hybrid.

Knows FAISS search (GPU when present), how a loaded index is checked against
its manifest and file checksums, and how the dense and BM25 lists become
hits; knows nothing of documents, embedders, Ray Serve or HTTP (building
lives in `retrieval.faiss_build` and `retrieval.bm25_index`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.bm25_index import bm25_search, load_bm25
from retrieval.chunking import TextChunk
from retrieval.errors import (
    IndexMismatchError,
    RetrievalError,
    build_command_for,
    index_corrupt,
)
from retrieval.hybrid import reciprocal_rank_fusion
from retrieval.manifest import (
    BM25_DIR,
    CHUNKS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    IndexManifest,
    read_manifest,
)
from retrieval.storage import read_chunks, sha256_file
from retrieval.types import DENSE, Hit, SearchMode

logger = logging.getLogger(__name__)
# FAISS GPU indexes answer at most this many neighbours per query.
_GPU_MAX_K = 2048


@dataclass
class IndexFolder:
    """An index folder read into memory, every file checked (CPU FAISS).

    Attributes:
        manifest: its manifest.
        index: the FAISS index; it returns chunk ids (format 1: rows, which
            are the chunk ids there).
        ids: chunk id of each line of chunks.jsonl (= BM25 row).
        chunks: the chunks, in that order.
        bm25: the bm25s index, or None (format 1).
    """

    folder: Path
    manifest: IndexManifest
    index: Any
    ids: list[int]
    chunks: list[TextChunk]
    bm25: Any


def read_index_folder(
    index_dir: str | Path, embedder_model_id: str, dimension: int
) -> IndexFolder:
    """Read an index folder, checking the embedder, checksums and counts.

    Raises:
        IndexNotFoundError: no index at `index_dir`.
        IndexMismatchError: built with another embedder id or dimension.
        RetrievalError: a file is missing, fails its checksum or cannot be
            parsed (corrupt).
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
            f"rebuild with `{build_command_for(folder)}` or set "
            f"models.embedder.model to {manifest.embedder_model_id!r}"
        )
    _check_files(folder, manifest)
    ids, chunks = read_chunks(folder / CHUNKS_FILE, folder)
    try:
        index = import_faiss().read_index(str(folder / INDEX_FILE))
    except RuntimeError as exc:
        raise index_corrupt(folder, f"{INDEX_FILE} cannot be read") from exc
    if (
        index.ntotal != manifest.chunk_count
        or len(chunks) != manifest.chunk_count
        or index.d != manifest.dimension
    ):
        raise index_corrupt(
            folder,
            f"it holds {index.ntotal} vectors of {index.d} dimensions and "
            f"{len(chunks)} chunks, the manifest says {manifest.chunk_count} "
            f"of {manifest.dimension}",
        )
    if not manifest.stable_ids and ids != list(range(len(ids))):
        raise index_corrupt(folder, f"{CHUNKS_FILE} is not in row order")
    bm25 = load_bm25(folder / BM25_DIR, folder) if manifest.has_bm25 else None
    return IndexFolder(folder, manifest, index, ids, chunks, bm25)


def _check_files(folder: Path, manifest: IndexManifest) -> None:
    for name in (INDEX_FILE, CHUNKS_FILE):
        if name not in manifest.files:
            raise index_corrupt(folder, f"{MANIFEST_FILE} lists no checksum for {name}")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise index_corrupt(folder, f"{name} is missing")
        if sha256_file(path) != expected:
            raise index_corrupt(folder, f"{name} does not match its checksum")


class FaissRetriever:
    """Search over an index folder written by `build_index` or `update_index`.

    Use `FaissRetriever.load`. Searches may run from several threads.

    Attributes:
        manifest: the index's manifest.
        index_dir: the folder it was loaded from.
        on_gpu: whether dense searches run on a GPU.
    """

    def __init__(self, loaded: IndexFolder, index: Any, on_gpu: bool) -> None:
        self._index = index
        self._cpu_index = None if on_gpu else loaded.index
        self._chunks = loaded.chunks
        self._ids = loaded.ids
        self._row_of = {chunk_id: row for row, chunk_id in enumerate(loaded.ids)}
        self._bm25 = loaded.bm25
        self.manifest = loaded.manifest
        self.index_dir = loaded.folder
        self.on_gpu = on_gpu
        # FAISS CPU searches are thread-safe; GPU resources are not.
        self._lock = threading.Lock() if on_gpu else None
        if self._cpu_index is not None and self.manifest.index_type == "ivf":
            # Cosines of BM25-only hits are read back by id.
            ivf = import_faiss().extract_index_ivf(self._cpu_index)
            ivf.set_direct_map_type(import_faiss().DirectMap.Hashtable)

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
            index_dir: folder written by `build_index` or `update_index`.
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
        loaded = read_index_folder(index_dir, embedder_model_id, dimension)
        folder = loaded.folder
        faiss = import_faiss()
        index, on_gpu = loaded.index, False
        kind = loaded.manifest.index_type
        if kind != "hnsw" and gpu_wanted(faiss, use_gpu):
            index = faiss.index_cpu_to_all_gpus(index)
            on_gpu = True
        elif kind == "hnsw" and use_gpu == "always":
            logger.warning("FAISS has no GPU HNSW index; %s stays on CPU", folder)
        return cls(loaded, index, on_gpu)

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def has_bm25(self) -> bool:
        """Whether sparse and hybrid searches are possible (format 2)."""
        return self._bm25 is not None

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        queries: list[str] | None = None,
        mode: SearchMode = DENSE,
    ) -> list[list[Hit]]:
        """Find the `k` best chunks for each query.

        Args:
            vectors: (n, dimension) query vectors from the index's embedder
                (L2-normalised, so scores are cosine similarities).
            k: hits per query (>= 1); more than the index holds returns all.
            queries: the n query texts; needed by "sparse" and "hybrid".
            mode: dense, sparse or hybrid (RRF of both top-k lists).

        Returns:
            n lists of up to `k` hits, best first.

        Raises:
            ValueError: k < 1, vectors of the wrong shape, or no query texts
                for a sparse or hybrid search.
            RetrievalError: a sparse or hybrid search of an index without
                BM25 (format 1).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries_v = np.ascontiguousarray(vectors, dtype=np.float32)
        if queries_v.ndim != 2 or queries_v.shape[1] != self.manifest.dimension:
            raise ValueError(
                f"expected query vectors of shape (n, {self.manifest.dimension}), "
                f"got {queries_v.shape}"
            )
        if queries_v.shape[0] == 0:
            return []
        if mode.mode == "dense":
            dense = self._dense(queries_v, k)
            return [[self._hit(i, s, s) for i, s in row] for row in dense]
        texts = self._texts_for(mode, queries, queries_v.shape[0])
        sparse = bm25_search(self._bm25, texts, k)
        sparse_ids = [[(self._ids[r], s) for r, s in row] for row in sparse]
        if mode.mode == "sparse":
            return [
                [self._hit(i, s, self._cosine(q, i)) for i, s in row]
                for q, row in zip(queries_v, sparse_ids, strict=True)
            ]
        out = []
        for q, d_row, s_row in zip(
            queries_v, self._dense(queries_v, k), sparse_ids, strict=True
        ):
            cosines = dict(d_row)
            fused = reciprocal_rank_fusion(
                [[i for i, _ in d_row], [i for i, _ in s_row]], mode.rrf_k, k
            )
            out.append(
                [
                    self._hit(i, s, cosines[i] if i in cosines else self._cosine(q, i))
                    for i, s in fused
                ]
            )
        return out

    def _texts_for(
        self, mode: SearchMode, queries: list[str] | None, n: int
    ) -> list[str]:
        if self._bm25 is None:
            raise RetrievalError(
                f"index {self.index_dir} has no BM25 index (format "
                f"{self.manifest.format_version}), so retrieval.mode "
                f"{mode.mode!r} cannot search it; rebuild it with "
                f"`{build_command_for(self.index_dir)}` or use retrieval.mode dense"
            )
        if queries is None or len(queries) != n:
            raise ValueError(
                f"a {mode.mode} search needs the {n} query texts, got "
                f"{'none' if queries is None else len(queries)}"
            )
        return queries

    def _dense(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        k = min(k, len(self._chunks), _GPU_MAX_K if self.on_gpu else k)
        if self._lock is None:
            scores, ids = self._index.search(queries, k)
        else:
            with self._lock:
                scores, ids = self._index.search(queries, k)
        return [
            [(int(i), float(s)) for s, i in zip(s_row, i_row, strict=True) if i >= 0]
            for s_row, i_row in zip(scores, ids, strict=True)
        ]

    def _cosine(self, query: np.ndarray, chunk_id: int) -> float | None:
        """The query's cosine with a chunk's stored vector (None on GPU)."""
        if self._cpu_index is None:
            return None
        try:
            vector = self._cpu_index.reconstruct(int(chunk_id))
        except RuntimeError:
            return None
        return float(np.dot(query, vector))

    def _hit(self, chunk_id: int, score: float, cosine: float | None) -> Hit:
        chunk = self._chunks[self._row_of[chunk_id]]
        return Hit(
            chunk_id=chunk_id,
            doc_id=chunk.doc_id,
            text=chunk.text,
            score=score,
            title=chunk.title,
            cosine=cosine,
        )


def import_faiss() -> Any:
    """The `faiss` module, or a RetrievalError saying how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise RetrievalError(
            "faiss is not installed; run 'pip install faiss-cpu' (or faiss-gpu "
            "on CUDA machines)"
        ) from exc
    return faiss


def gpu_wanted(faiss: Any, use_gpu: str) -> bool:
    """Whether to use a GPU; raises when `use_gpu` is "always" and none is seen."""
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
