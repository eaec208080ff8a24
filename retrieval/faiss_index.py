"""The FAISS side of an index: build the FAISS index, load it checked, search it.

Knows FAISS (flat / IVF / HNSW, GPU when present) and how a loaded index is
checked against its manifest and file checksums; knows nothing of documents,
embedders, Ray Serve or HTTP.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.chunking import TextChunk
from retrieval.config import IndexBuildConfig
from retrieval.errors import (
    IndexMismatchError,
    RetrievalError,
    build_command_for,
    index_corrupt,
)
from retrieval.manifest import (
    CHUNKS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    IndexManifest,
    read_manifest,
)
from retrieval.storage import read_chunks, sha256_file
from retrieval.types import Hit

logger = logging.getLogger(__name__)

# k-means wants this many training points per list (FAISS warns below it).
_POINTS_PER_LIST = 39
# FAISS GPU indexes answer at most this many neighbours per query.
_GPU_MAX_K = 2048


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
                f"rebuild with `{build_command_for(folder)}` or set "
                f"models.embedder.model to {manifest.embedder_model_id!r}"
            )
        for name in (INDEX_FILE, CHUNKS_FILE):
            if name not in manifest.files:
                raise index_corrupt(
                    folder, f"{MANIFEST_FILE} lists no checksum for {name}"
                )
        for name, expected in manifest.files.items():
            path = folder / name
            if not path.is_file():
                raise index_corrupt(folder, f"{name} is missing")
            if sha256_file(path) != expected:
                raise index_corrupt(folder, f"{name} does not match its checksum")
        chunks = read_chunks(folder / CHUNKS_FILE, folder)
        faiss = import_faiss()
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
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
        on_gpu = False
        if manifest.index_type != "hnsw" and gpu_wanted(faiss, use_gpu):
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


def build_faiss(
    vectors: np.ndarray, config: IndexBuildConfig
) -> tuple[Any, Literal["flat", "ivf", "hnsw"], int | None]:
    """A CPU FAISS index of `vectors`, its type and its IVF list count."""
    faiss = import_faiss()
    n, dim = vectors.shape
    gpu = gpu_wanted(faiss, config.use_gpu)
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


def write_faiss(index: Any, path: Path) -> None:
    """Write `index` to `path` and flush it to disk."""
    import_faiss().write_index(index, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())
