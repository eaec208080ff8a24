"""Build and change FAISS indexes whose vectors live under stable chunk ids.

Knows the FAISS index types (flat / IVF / HNSW, GPU training when present),
which of them can drop and add vectors by id and which must be rebuilt from
their kept vectors; knows nothing of documents, chunks or manifests.

Flat and HNSW indexes are wrapped in an `IndexIDMap2`; IVF stores the ids in
its inverted lists itself (an id map over IVF would renumber on removal).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.config import IndexBuildConfig
from retrieval.faiss_index import gpu_wanted, import_faiss

logger = logging.getLogger(__name__)

# k-means wants this many training points per list (FAISS warns below it).
_POINTS_PER_LIST = 39

IndexType = Literal["flat", "ivf", "hnsw"]


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


def _hnsw(dim: int, m: int, ef_search: int) -> Any:
    faiss = import_faiss()
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = ef_search
    return faiss.IndexIDMap2(index)


def build_faiss(
    vectors: np.ndarray, ids: np.ndarray, config: IndexBuildConfig
) -> tuple[Any, IndexType, int | None]:
    """A CPU FAISS index of `vectors` under `ids`, its type and IVF list count."""
    faiss = import_faiss()
    n, dim = vectors.shape
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    gpu = gpu_wanted(faiss, config.use_gpu)
    if config.index_type == "hnsw":
        if gpu:
            logger.info("FAISS has no GPU HNSW index; building it on CPU")
        index = _hnsw(dim, config.hnsw_m, config.hnsw_ef_search)
        index.add_with_ids(vectors, ids)
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
                index = faiss.index_gpu_to_cpu(on_gpu)
            else:
                index.train(vectors)
            index.add_with_ids(vectors, ids)
            index.nprobe = min(config.ivf_nprobe, nlist)
            return index, "ivf", nlist
        logger.warning(
            "IVF needs at least %d chunks to train, the corpus has %d; building a "
            "flat (exact) index instead",
            _POINTS_PER_LIST,
            n,
        )
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    index.add_with_ids(vectors, ids)
    return index, "flat", None


def stored_vectors(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a flat or HNSW index, with or without an id map
    (without one, the id of row i is i)."""
    faiss = import_faiss()
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner = faiss.downcast_index(index.index)
    else:
        ids, inner = np.arange(index.ntotal, dtype=np.int64), index
    vectors = inner.reconstruct_n(0, inner.ntotal) if inner.ntotal else None
    if vectors is None:
        vectors = np.empty((0, index.d), dtype=np.float32)
    return ids, np.asarray(vectors, dtype=np.float32)


def update_faiss(
    parent: Any,
    index_type: IndexType,
    removed: np.ndarray,
    vectors: np.ndarray,
    ids: np.ndarray,
    hnsw_m: int | None,
) -> Any:
    """A new CPU index: `parent` less the vectors under `removed`, plus
    `vectors` under `ids`. `parent` itself is not changed.

    IVF and id-mapped flat indexes drop and add in place on a copy (IVF keeps
    its trained lists; a full build retrains them); HNSW cannot remove, so
    its graph is rebuilt from the kept vectors (no embedding involved), and so
    is a format-1 flat index, which gains an id map on the way.
    """
    faiss = import_faiss()
    removed = np.ascontiguousarray(removed, dtype=np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    in_place = index_type == "ivf" or isinstance(parent, faiss.IndexIDMap2)
    if in_place and index_type != "hnsw":
        index = faiss.clone_index(parent)
        if removed.size:
            index.remove_ids(faiss.IDSelectorBatch(removed))
        if ids.size:
            index.add_with_ids(vectors, ids)
        return index
    old_ids, old_vectors = stored_vectors(parent)
    keep = ~np.isin(old_ids, removed)
    all_ids = np.concatenate([old_ids[keep], ids])
    all_vectors = np.concatenate([old_vectors[keep], vectors])
    if index_type == "hnsw":
        inner = faiss.downcast_index(
            parent.index if isinstance(parent, faiss.IndexIDMap2) else parent
        )
        index = _hnsw(parent.d, hnsw_m or 32, int(inner.hnsw.efSearch))
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(parent.d))
    index.add_with_ids(all_vectors, all_ids)
    return index


def write_faiss(index: Any, path: Path) -> None:
    """Write `index` to `path` and flush it to disk."""
    import_faiss().write_index(index, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())
